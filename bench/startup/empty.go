// Go's empty program, the yardstick for bench/startup/startup.sh.
package main

func main() {}
