# Kconfig-driven pruning experiment harness. 'make help' lists the targets.
#
#   make defconfig-<name> | make menuconfig    choose what to compare (.config)
#   make                                       run the matrix, draw its graphs
#   make continue                              resume an interrupted matrix
#   make publish-graphs RESULTS=results/<id>   show that matrix's graphs in images/ (make never writes there)
#
# PYTHON=/path/to/python uses your own environment instead of .venv.
# V=1 shows the commands.

.DEFAULT_GOAL := all

V ?= 0
Q := $(if $(filter 1,$(V)),,@)
VENV ?= .venv

ifeq ($(origin PYTHON),undefined)
PYTHON := $(VENV)/bin/python
DEPS := $(VENV)/.installed
else
DEPS :=
endif

export PYTHONDONTWRITEBYTECODE := 1

# $(call shquote,VALUE): VALUE as one shell word, whatever spaces or quotes it holds (RESULTS="my results").
shquote = '$(subst ','\'',$(1))'

include $(sort $(wildcard make/*.mk))

.PHONY: help
## help: list the targets and the defconfigs
help: $(DEPS)
	$(Q)$(PYTHON) -m scripts.help
