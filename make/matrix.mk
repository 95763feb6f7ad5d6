# The test matrix: run, continue, inspect, draw.

EPOCHS ?=
RESULTS ?=
RETRY_FAILED ?=

.PHONY: all quickstart continue status dry-run update-graphs publish-graphs
## all: run the matrix that .config describes (EPOCHS=N shortens every run)
all: $(DEPS)
	$(Q)$(PYTHON) -m scripts.matrix run $(if $(EPOCHS),--epochs $(EPOCHS))

## quickstart: configure the offline LeNet-5 quick start, run it and draw its graphs into results/<id>/graphs/
quickstart: $(DEPS)
	$(Q)$(MAKE) --no-print-directory defconfig DEFCONFIG=
	$(Q)$(MAKE) --no-print-directory all

## continue: resume the newest (or RESULTS=results/<id>) matrix; RETRY_FAILED=1 reruns failed runs
continue: $(DEPS)
	$(Q)$(PYTHON) -m scripts.matrix continue $(if $(RESULTS),--results $(RESULTS)) $(if $(RETRY_FAILED),--retry-failed)

## status: show each run of the newest (or RESULTS=) matrix
status: $(DEPS)
	$(Q)$(PYTHON) -m scripts.matrix status $(if $(RESULTS),--results $(RESULTS))

## dry-run: list the runs .config expands to, with their command lines
dry-run: $(DEPS)
	$(Q)$(PYTHON) -m scripts.matrix dry-run $(if $(EPOCHS),--epochs $(EPOCHS))

## update-graphs: redraw results/<id>/graphs/ and report.md of the newest (or RESULTS=) matrix
update-graphs: $(DEPS)
	$(Q)$(PYTHON) -m scripts.graphs $(if $(RESULTS),--results $(RESULTS))

## publish-graphs: copy RESULTS=results/<id>'s graphs to images/<model>/ (the tracked images the README shows)
publish-graphs: $(DEPS)
	$(Q)$(PYTHON) -m scripts.graphs --publish $(if $(RESULTS),--results $(RESULTS))
