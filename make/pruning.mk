# Pruning family: the side-by-side cost benchmark (see benchmarks/pruning.py for its flags).

.PHONY: bench-pruning
## bench-pruning: step time, mask-update time and state bytes of each pruning method next to torch.nn.utils.prune
bench-pruning: $(DEPS)
	$(Q)$(PYTHON) -m benchmarks.pruning $(BENCH_ARGS)
