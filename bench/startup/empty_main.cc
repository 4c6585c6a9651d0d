// Copyright goro authors.
//
// An empty C++ main, the floor for bench/startup/startup.sh.

int main() { return 0; }
