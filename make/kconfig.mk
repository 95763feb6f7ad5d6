# Configuration through kconfiglib's own tools.

DEFCONFIG ?=
TRACKER ?=
TRACKER_ARG = $(if $(TRACKER),--tracker $(call shquote,$(TRACKER)))
# TRACKER= is read when a configuration is made; a run takes .config's trackers, so elsewhere it is an error, not ignored.
ifeq ($(origin TRACKER)$(MAKELEVEL),command line0)
ifeq ($(filter defconfig defconfig-% quickstart,$(MAKECMDGOALS)),)
$(error TRACKER=$(TRACKER) is read only by 'make defconfig[-<name>] TRACKER=...' (and quickstart); a run uses .config's trackers: set them in 'make menuconfig' (Experiment tracking))
endif
endif

.PHONY: menuconfig defconfig savedefconfig olddefconfig listnewconfig genconfig
## menuconfig: choose models, optimizers, pruning methods and sparsities interactively
menuconfig: $(DEPS)
	$(Q)$(PYTHON) -m menuconfig Kconfig

## defconfig: load the quick-start matrix (DEFCONFIG=<name> loads another; TRACKER=wandb,trackio)
defconfig: $(DEPS)
	$(Q)$(PYTHON) -m scripts.defconfig $(DEFCONFIG) $(TRACKER_ARG)

## defconfig-<name>: load defconfigs/<name> or <model>/defconfigs/<name>
defconfig-%: $(DEPS)
	$(Q)$(PYTHON) -m scripts.defconfig $* $(TRACKER_ARG)

## savedefconfig: write the minimal form of .config to ./defconfig
savedefconfig: $(DEPS)
	$(Q)$(PYTHON) -m savedefconfig --kconfig Kconfig --out defconfig

## olddefconfig: update .config to the current Kconfig, new symbols at their defaults
olddefconfig: $(DEPS)
	$(Q)$(PYTHON) -m olddefconfig Kconfig

## listnewconfig: list symbols in Kconfig that .config does not set yet
listnewconfig: $(DEPS)
	$(Q)$(PYTHON) -m listnewconfig Kconfig

## genconfig: write build/config.json (typed values) from .config
genconfig: $(DEPS)
	$(Q)$(PYTHON) -m scripts.genconfig
