"""The top floor: the `shopstream` command, `up`, the benchmarks and the test set-up.

It may import every floor below it; nothing imports it."""
