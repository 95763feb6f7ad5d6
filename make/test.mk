# Tests and housekeeping. Results are never deleted by make.

PYTEST_ARGS ?=

.PHONY: test test-tools clean mrproper
## test: run the whole test suite (end-to-end tests included)
test: $(DEPS) test-tools
	$(Q)$(PYTHON) -m pytest $(PYTEST_ARGS)

# tmux drives `make menuconfig` in the tests (Debian package).
test-tools:
	$(Q)command -v tmux >/dev/null || (apt-get update -qq && apt-get install -y -qq tmux >/dev/null)

## clean: remove build/ (generated config.json, defconfig record)
clean:
	$(Q)rm -rf build

## mrproper: clean, and remove .config and .config.old (results/ and .venv are kept)
mrproper: clean
	$(Q)rm -f .config .config.old defconfig
