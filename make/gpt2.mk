# GPT-2: tokenise a corpus ahead of a run, and the throughput benchmark.

GPT2_DATASET ?= pydoc
GPT2_DATA_DIR ?= data
GPT2_PREPARE_ARGS ?=

.PHONY: gpt2-prepare bench-gpt2
## gpt2-prepare: tokenise GPT2_DATASET=pydoc|shakespeare|finewebedu|openwebtext into GPT2_DATA_DIR/gpt2/ (GPT2_PREPARE_ARGS="--max-docs N")
gpt2-prepare: $(DEPS)
	$(Q)$(PYTHON) -m gpt2.prepare --dataset $(GPT2_DATASET) --data-dir $(GPT2_DATA_DIR) $(GPT2_PREPARE_ARGS)

## bench-gpt2: GPT-2-tiny training tokens/s of gpt2/train.py next to a minimal hand-written loop (BENCH_ARGS for more)
bench-gpt2: $(DEPS)
	$(Q)$(PYTHON) -m benchmarks.gpt2_throughput $(BENCH_ARGS)
