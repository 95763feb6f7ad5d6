# Structured pruning: what pruning buys at inference (see lib/inference.py, docs/inference.md).

FORCE ?=

.PHONY: bench-inference
## bench-inference: size, latency, throughput, peak memory and quality of the newest (or RESULTS=) matrix's completed runs next to their dense baseline, into metrics.json (ONLY=glob, FORCE=1 measures again)
bench-inference: $(DEPS)
	$(Q)$(PYTHON) -m scripts.bench_inference $(if $(RESULTS),--results $(call shquote,$(RESULTS))) $(if $(ONLY),--only $(call shquote,$(ONLY))) $(if $(FORCE),--force)

.PHONY: bench-structured
## bench-structured: CPU latency (batch 1) and throughput of LeNet-5, ResNet-18 and GPT-2-tiny dense next to their compact form at 40 % channel sparsity (BENCH_ARGS for more)
bench-structured: $(DEPS)
	$(Q)$(PYTHON) -m benchmarks.structured $(BENCH_ARGS)
