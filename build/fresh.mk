# The fresh machine check. Included by the top-level Makefile: `include build/fresh.mk`.
#
# build/fresh/run.sh, as root: a copy of a pristine Debian 12 amd64 minbase root (make, python3,
# ca-certificates, git; made once by build/fresh/make_root.sh into .cache/fresh-root/base),
# a clean `git clone` of HEAD in a 0700 folder in it, then the README's `make test` and
# `make run` there, exactly as written, in private mount and PID namespaces. Only committed
# work is checked. Logs and per-phase timings: .cache/fresh-root/logs/<timestamp>/.
# FRESH_ARGS passes options on, e.g. FRESH_ARGS='--ref HEAD~1 --verbose'.

FRESH_ARGS ?=

.PHONY: test-fresh

test-fresh: ## make test and make run in a clean clone on a new Debian 12 root (as root; about 7 min)
	bash build/fresh/run.sh $(FRESH_ARGS)
