# The test matrix: run, continue, inspect, draw.

EPOCHS ?=
RESULTS ?=
RETRY_FAILED ?=
RESTART_CORRUPT ?=
IMAGES ?=
# Where and how many runs execute (default: .config's CONFIG_MATRIX_*), and which.
JOBS ?=
THREADS ?=
SCHEDULER ?=
FAIL_FAST ?=
ONLY ?=
EXECUTION = $(if $(JOBS),--jobs $(JOBS)) $(if $(THREADS),--threads $(THREADS)) \
	$(if $(SCHEDULER),--scheduler $(SCHEDULER)) $(if $(FAIL_FAST),--fail-fast) $(if $(ONLY),--only $(call shquote,$(ONLY)))

.PHONY: all quickstart continue status cancel dry-run estimate update-graphs publish-graphs compare
## all: run the matrix that .config describes (EPOCHS=N shortens it; JOBS=N|auto, THREADS=N, SCHEDULER=local|slurm, FAIL_FAST=1, ONLY=glob)
all: $(DEPS)
	$(Q)$(PYTHON) -m scripts.matrix run $(if $(EPOCHS),--epochs $(EPOCHS)) $(EXECUTION)

## quickstart: configure the offline LeNet-5 quick start, run it and draw its graphs into results/<id>/graphs/
quickstart: $(DEPS)
	$(Q)$(MAKE) --no-print-directory defconfig DEFCONFIG=
	$(Q)$(MAKE) --no-print-directory all

## continue: resume the newest (or RESULTS=results/<id>) matrix; RETRY_FAILED=1 reruns failed runs, RESTART_CORRUPT=1 those whose checkpoint was corrupt; the options of all
continue: $(DEPS)
	$(Q)$(PYTHON) -m scripts.matrix continue $(if $(RESULTS),--results $(call shquote,$(RESULTS))) $(if $(RETRY_FAILED),--retry-failed) $(if $(RESTART_CORRUPT),--restart-corrupt) $(EXECUTION)

## status: show each run of the newest (or RESULTS=) matrix, live or dead, with its Slurm state (ONLY=glob)
status: $(DEPS)
	$(Q)$(PYTHON) -m scripts.matrix status $(if $(RESULTS),--results $(call shquote,$(RESULTS))) $(if $(ONLY),--only $(call shquote,$(ONLY)))

## cancel: cancel the Slurm job arrays of the newest (or RESULTS=) matrix
cancel: $(DEPS)
	$(Q)$(PYTHON) -m scripts.matrix cancel $(if $(RESULTS),--results $(call shquote,$(RESULTS)))

## dry-run: list the runs .config expands to, with their command lines
dry-run: $(DEPS)
	$(Q)$(PYTHON) -m scripts.matrix dry-run $(if $(EPOCHS),--epochs $(EPOCHS))

## estimate: the expected wall time of the matrix .config describes, for JOBS=N here and the Slurm throttle
estimate: $(DEPS)
	$(Q)$(PYTHON) -m scripts.estimate $(if $(JOBS),--jobs $(JOBS))

## update-graphs: redraw results/<id>/graphs/ and report.md of the newest (or RESULTS=) matrix
update-graphs: $(DEPS)
	$(Q)$(PYTHON) -m scripts.graphs $(if $(RESULTS),--results $(call shquote,$(RESULTS)))

## publish-graphs: copy RESULTS=results/<id>'s graphs to images/<model>/ (the tracked images the README shows; IMAGES=dir elsewhere)
publish-graphs: $(DEPS)
	$(Q)$(PYTHON) -m scripts.graphs --publish $(if $(RESULTS),--results $(call shquote,$(RESULTS))) $(if $(IMAGES),--images $(call shquote,$(IMAGES)))

## compare: A=results/<id1> B=results/<id2> (or defconfig names): B/compare-<A id>/compare.md and figures; fails when B regressed (TOLERANCE=0.5)
compare: $(DEPS)
	$(Q)$(PYTHON) -m scripts.compare $(if $(A),$(call shquote,$(A))) $(if $(B),$(call shquote,$(B))) $(if $(TOLERANCE),--tolerance $(TOLERANCE))

.PHONY: bench-matrix
## bench-matrix: the quick start with JOBS=1 and JOBS=2 side by side (wall ratio, identical metrics) and the harness efficiency
bench-matrix: $(DEPS)
	$(Q)$(PYTHON) -m benchmarks.matrix $(BENCH_ARGS)
