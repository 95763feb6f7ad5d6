# Tests and housekeeping. Results are never deleted by make; make never installs system packages
# (.ci/run does that in CI; the README says what a developer needs).

PYTEST_ARGS ?=

.PHONY: test clean mrproper
## test: run the whole test suite (end-to-end tests included; the menuconfig test needs tmux)
test: $(DEPS)
	$(Q)$(PYTHON) -m pytest $(PYTEST_ARGS)

## clean: remove build/ (generated config.json, defconfig record)
clean:
	$(Q)rm -rf build

## mrproper: clean, and remove .config and .config.old (results/ and .venv are kept)
mrproper: clean
	$(Q)rm -f .config .config.old defconfig
