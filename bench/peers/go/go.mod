module goro/bench/peers/go

go 1.19
