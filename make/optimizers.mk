# The optimizer family (lib/optim): benchmark.

.PHONY: bench-optimizers
## bench-optimizers: per-step time of each optimizer relative to torch.optim.AdamW (LeNet-5, MLP stack)
bench-optimizers: $(DEPS)
	$(Q)$(PYTHON) -m benchmarks.optimizers
