# Task components: `make tasks-rust` builds the Rust example components into
# target/tasks/, where the worker loads them (see example-tasks/README.md);
# `make tasks-python` (and, per language, tasks-<lang>) builds that language's
# example with `celeriac build` into target/lang-tasks/<lang>/tasks.wasm;
# `make tasks` builds them all.
# The worker itself: `make build` (release, target/release/celeriac) and
# `make install` (the same build, copied to ~/.cargo/bin/celeriac). `make demo`
# uses that same release build, so the README's flow compiles wasmtime once.

CARGO ?= cargo

GUEST_TARGET  := wasm32-wasip2
GUEST_PROFILE := guest
# A target dir of its own, so a guest build never waits for cargo's lock on
# the host build (and the two never invalidate each other's artifacts).
GUEST_DIR     := target/guest
TASKS_DIR     := target/tasks

# Every component `make tasks` builds. To add one, append its output here and
# add a rule for it below. The path under $(TASKS_DIR) sets the Celery name
# prefix: billing/invoices.wasm serves billing.invoices.<task>.
COMPONENTS := \
	$(TASKS_DIR)/tasks.wasm

.PHONY: tasks tasks-rust tasks-python tasks-c tasks-zig tasks-js test-tasks clean-tasks guest-target demo build \
	install FORCE

# The main job on a fresh machine: build everything, start a worker on the
# embedded SQLite default, send tasks.add(4, 4), print 8 (scripts/demo.sh,
# which runs `make tasks-rust build` itself).
demo:
	bash scripts/demo.sh

# The one host build: release, as the README uses it everywhere.
build:
	$(CARGO) build --release --locked -p celeriac

# Puts `celeriac` on the PATH (~/.cargo/bin): `cargo install --path` builds in
# this workspace's target/ with the release profile, so after `make build` or
# `make demo` it compiles nothing again. Also builds the Rust example tasks.
install: tasks-rust
	$(CARGO) install --path runtime --locked

# Every example component, in every language.
tasks: tasks-rust tasks-python tasks-c tasks-zig tasks-js

tasks-rust: $(COMPONENTS)

# --- Rust components ---------------------------------------------------------
# $(call rust_component,CRATE): builds the workspace crate CRATE (a cdylib that
# uses celeriac-sdk) for wasm32-wasip2, which directly yields a component, and
# copies it to the rule's target. The copy goes through a temporary file so a
# worker watching $(TASKS_DIR) never sees a half-written component.
rust_component = \
	$(CARGO) build --profile $(GUEST_PROFILE) --target $(GUEST_TARGET) \
		--target-dir $(GUEST_DIR) -p $(1) && \
	mkdir -p $(@D) && \
	cp $(GUEST_DIR)/$(GUEST_TARGET)/$(GUEST_PROFILE)/$(subst -,_,$(1)).wasm $@.tmp && \
	mv $@.tmp $@

# Cargo decides what is stale, so these rules always run it (FORCE).
$(TASKS_DIR)/tasks.wasm: FORCE | guest-target
	$(call rust_component,tasks)

# Example of one more Rust component, crate example-tasks/billing-invoices
# (listed in the workspace members), served as billing.invoices.<task>:
#
# $(TASKS_DIR)/billing/invoices.wasm: FORCE | guest-target
# 	$(call rust_component,billing-invoices)

# Installs the Rust wasm target if it is missing (cheap check, no network).
guest-target:
	@if command -v rustup >/dev/null 2>&1 && \
	    ! rustup target list --installed | grep -qx '$(GUEST_TARGET)'; then \
		echo "rustup target add $(GUEST_TARGET)"; \
		rustup target add $(GUEST_TARGET); \
	fi

# --- Test-only hostile components (issue #9) --------------------------------
# `make test-tasks` builds tests/hostile-tasks (never part of `make tasks`) and
# derives every attack from it with tests/hostile-gen/gen.py (patched tasks()
# modes, compile bombs, bad files) into $(TEST_TASKS_DIR), each written to a
# temporary file and renamed. Used by tests/test_hostile_tenants.py. It also
# builds tests/http-tasks into $(HTTP_TASKS_DIR)/http.wasm (tests/test_tenants.py).
TEST_TASKS_DIR := target/test-tasks
# tests/http-tasks (a component that fetches a URL through wasi:http), for tests/test_tenants.py.
HTTP_TASKS_DIR := target/http-tasks

test-tasks: | guest-target
	$(CARGO) build --profile $(GUEST_PROFILE) --target $(GUEST_TARGET) \
		--target-dir $(GUEST_DIR) -p hostile-tasks
	mkdir -p $(TEST_TASKS_DIR)
	cp $(GUEST_DIR)/$(GUEST_TARGET)/$(GUEST_PROFILE)/hostile_tasks.wasm $(TEST_TASKS_DIR)/.base.wasm.tmp
	mv $(TEST_TASKS_DIR)/.base.wasm.tmp $(TEST_TASKS_DIR)/.base.wasm
	python3 tests/hostile-gen/gen.py $(TEST_TASKS_DIR)/.base.wasm $(TEST_TASKS_DIR)
	$(CARGO) build --profile $(GUEST_PROFILE) --target $(GUEST_TARGET) \
		--target-dir $(GUEST_DIR) -p http-tasks
	mkdir -p $(HTTP_TASKS_DIR)
	cp $(GUEST_DIR)/$(GUEST_TARGET)/$(GUEST_PROFILE)/http_tasks.wasm $(HTTP_TASKS_DIR)/.http.wasm.tmp
	mv $(HTTP_TASKS_DIR)/.http.wasm.tmp $(HTTP_TASKS_DIR)/http.wasm

# --- Other languages ---------------------------------------------------------
# Each language's example (example-tasks/<lang>/) is built by the debug
# `celeriac build`, which calls that language's toolchain, into
# $(LANG_TASKS_DIR)/<lang>/tasks.wasm: a worker with -A $(LANG_TASKS_DIR)/<lang>
# serves tasks.add etc. Toolchains: scripts/install-toolchains.sh <lang>; the
# repository's .venv/bin (componentize-py, python3 with ziglang) is put on PATH.
LANG_TASKS_DIR := target/lang-tasks
CELERIAC_BUILD  = PATH="$(CURDIR)/.venv/bin:$$PATH" $(CARGO) run -q -p celeriac -- build

# Rebuilt when the example, the embedded SDK or the contract changes.
tasks-python: $(LANG_TASKS_DIR)/python/tasks.wasm
$(LANG_TASKS_DIR)/python/tasks.wasm: $(wildcard example-tasks/python/*.py) $(wildcard sdk-python/celeriac/*.py) \
		wit/task.wit $(wildcard sdk-python/wit/*.wit sdk-python/wit/deps/*.wit) runtime/src/toolchain/python.rs
	$(CELERIAC_BUILD) example-tasks/python -o $@
NATIVE_SDK_DEPS := wit/task.wit sdk-c/celeriac.h runtime/src/toolchain/c.rs

# C: clang + wasi-libc (apt); bindings and component encoding happen inside celeriac.
tasks-c: $(LANG_TASKS_DIR)/c/tasks.wasm
$(LANG_TASKS_DIR)/c/tasks.wasm: $(wildcard example-tasks/c/*.c) $(NATIVE_SDK_DEPS)
	$(CELERIAC_BUILD) example-tasks/c -o $@

# Zig: ziglang from PyPI, through the same C bindings and sdk-c/celeriac.h.
tasks-zig: $(LANG_TASKS_DIR)/zig/tasks.wasm
$(LANG_TASKS_DIR)/zig/tasks.wasm: $(wildcard example-tasks/zig/*.zig) $(NATIVE_SDK_DEPS) runtime/src/toolchain/zig.rs
	$(CELERIAC_BUILD) example-tasks/zig -o $@

# JavaScript: componentize-qjs (npm; on the PATH or in the project's node_modules).
tasks-js: $(LANG_TASKS_DIR)/js/tasks.wasm
$(LANG_TASKS_DIR)/js/tasks.wasm: $(wildcard example-tasks/js/*.js) example-tasks/js/package.json sdk-js/celeriac.js \
		wit/task.wit runtime/src/toolchain/js.rs
	$(CELERIAC_BUILD) example-tasks/js -o $@

FORCE:

clean-tasks:
	rm -rf $(TASKS_DIR) $(GUEST_DIR) $(LANG_TASKS_DIR)
