"""The whole service on one machine, for the demo, the benchmarks and the tests: a private
redis-server when none answers, and a supervisor child with its workers."""
