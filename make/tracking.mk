# Experiment trackers: prove the set-up works, open trackio's dashboard.

.PHONY: trackio-test wandb-test trackio-view
## trackio-test: log a short synthetic run to trackio and read it back
trackio-test: $(DEPS)
	$(Q)$(PYTHON) -m lib.tracking.selftest trackio

## wandb-test: log a short synthetic run to wandb (offline unless logged in) and read it back
wandb-test: $(DEPS)
	$(Q)$(PYTHON) -m lib.tracking.selftest wandb

## trackio-view: serve trackio's local dashboard for the tracking directory
trackio-view: $(DEPS)
	$(Q)$(PYTHON) -m lib.tracking.selftest view
