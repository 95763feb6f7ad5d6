# The virtualenv, created on first use. PYTHON=... skips it.

$(VENV)/.installed: pyproject.toml
	$(Q)python3 -m venv $(VENV)
	$(Q)$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(Q)touch $@

.PHONY: deps
## deps: create .venv and install the dependencies (done automatically on first use)
deps: $(DEPS)
