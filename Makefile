# The 30Music artist-recommendation book.  `make help` lists the targets.
#   make book DATA_DIR=<folder> BUILD_DIR=<folder> PROFILE=<tiny|default|full> SEED=<int>
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules

PYTHON    ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
DATA_DIR  ?=
BUILD_DIR ?= build
PROFILE   ?= default
SEED      ?= 0
KERNEL    := thirtymusic
# torch's OpenMP threads spin only briefly (10,000 turns) before they sleep: the long default spin ran
# training 4x slower on shared cores, no spin 3x slower on idle ones (see thirtymusic_utils/__init__.py)
export GOMP_SPINCOUNT ?= 10000
PYTEST_ARGS ?=

NOTEBOOKS := 01_user_artist_matrix 02_collaborative_filtering 03_baselines 04_embeddings 05_training \
             06_t_test 07_comparison 08_conclusions intro 09_reproducibility
EXECUTED  := $(NOTEBOOKS:%=$(BUILD_DIR)/executed/%.ipynb)
STAMP     := $(VENV)/.installed-stamp
PKG_SRC   := $(shell find thirtymusic_utils -name "*.py")
PARAMS    := $(BUILD_DIR)/params.env
BUILD_ABS  = $(abspath $(BUILD_DIR))

ifeq ($(strip $(DATA_DIR)),)
  DATA_PATH := $(BUILD_DIR)/data/synthetic-$(PROFILE)-seed$(SEED)
  DATA_DEP  := $(DATA_PATH)/COMPLETE
else
  DATA_PATH := $(DATA_DIR)
  DATA_DEP  :=
endif

.PHONY: help setup data execute book check-book lab-check test test-fast lint format bench lab clean distclean FORCE

help: ## Show this help (the default goal)
	@echo "Usage: make <target> [DATA_DIR=folder] [BUILD_DIR=build] [PROFILE=tiny|default|full] [SEED=0]"
	@echo
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'
	@echo
	@echo "DATA_DIR empty = the synthetic 30Music stand-in; else a 30Music folder (idomaar or CSV form)"
	@echo "or a HetRec 2011 Last.fm 2K folder."

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "setuptools>=68" wheel
	$(BIN)/python -m pip install --quiet --no-build-isolation -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python ($(KERNEL))" >/dev/null
	touch $@

setup: $(STAMP) ## Create .venv with the pinned dependencies and the project's Jupyter kernel

# Rewritten only when DATA_DIR, PROFILE or SEED change, so make re-executes only what changed.
$(PARAMS): FORCE
	@mkdir -p $(@D)
	@printf 'DATA_DIR=%s\nPROFILE=%s\nSEED=%s\n' '$(DATA_DIR)' '$(PROFILE)' '$(SEED)' > $@.new
	@if cmp -s $@.new $@; then rm $@.new; else mv $@.new $@; fi

$(BUILD_DIR)/data/synthetic-%/COMPLETE: thirtymusic_utils/data/synthetic.py | $(STAMP)
	rm -rf $(@D)
	$(BIN)/python -m thirtymusic_utils.data.synthetic --profile $(PROFILE) --seed $(SEED) --out $(@D) --progress

data: $(STAMP) $(DATA_DEP) ## Generate the synthetic default data (nothing to do when DATA_DIR is set)
	@echo "data: $(DATA_PATH)"

# Each notebook runs after the one before it, with the same parameters.
$(BUILD_DIR)/executed/01_user_artist_matrix.ipynb: $(DATA_DEP)
$(BUILD_DIR)/executed/%.ipynb: notebooks/%.ipynb $(PKG_SRC) $(PARAMS) | $(STAMP)
	@mkdir -p $(@D)
	$(BIN)/papermill $< $@ --kernel $(KERNEL) --cwd notebooks --no-progress-bar \
	  -p data_dir "$(if $(strip $(DATA_DIR)),$(abspath $(DATA_DIR)),)" -p build_dir "$(BUILD_ABS)" \
	  -p seed $(SEED) -p profile "$(PROFILE)"
E := $(BUILD_DIR)/executed
$(E)/02_collaborative_filtering.ipynb: $(E)/01_user_artist_matrix.ipynb
$(E)/03_baselines.ipynb: $(E)/02_collaborative_filtering.ipynb
$(E)/04_embeddings.ipynb: $(E)/03_baselines.ipynb
$(E)/05_training.ipynb: $(E)/04_embeddings.ipynb
$(E)/06_t_test.ipynb: $(E)/05_training.ipynb
$(E)/07_comparison.ipynb: $(E)/06_t_test.ipynb
$(E)/08_conclusions.ipynb: $(E)/07_comparison.ipynb
$(E)/intro.ipynb: $(E)/08_conclusions.ipynb
$(E)/09_reproducibility.ipynb: $(E)/intro.ipynb

execute: $(EXECUTED) ## Execute every notebook in order with papermill (into BUILD_DIR/executed)

$(BUILD_DIR)/html/index.html: $(EXECUTED) _config.yml book/_toc.yml $(wildcard book/*.md book/_static/*)
	$(BIN)/python -m thirtymusic_utils.book.site build --build-dir $(BUILD_DIR)

book: $(BUILD_DIR)/html/index.html ## Set up, generate data, execute the notebooks and build the HTML book
	@echo "The book: $(abspath $(BUILD_DIR))/html/index.html"

check-book: $(BUILD_DIR)/html/index.html ## Read the built book in headless Chromium (if installed): overflow, figures, NaN; screenshots
	$(BIN)/python -m thirtymusic_utils.book.site check --build-dir $(BUILD_DIR)
	$(BIN)/python -m thirtymusic_utils.book.browser --build-dir $(BUILD_DIR)

test: $(STAMP) ## Run the whole test suite (unit, property, notebook smoke tests, strict book build)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## Run the tests without the slow and notebook ones
	$(BIN)/python -m pytest -m "not slow and not notebook and not book" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## ruff format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) ## Time and measure memory of the pipeline on PROFILE=full (writes BUILD_DIR/bench/bench.json)
	$(BIN)/python -m thirtymusic_utils.bench --build-dir $(BUILD_DIR)/bench \
	  --profile $(if $(filter default,$(PROFILE)),full,$(PROFILE)) --seed $(SEED) \
	  $(if $(strip $(DATA_DIR)),--data-dir $(DATA_DIR),)

lab: $(STAMP) ## Open JupyterLab on the notebooks with the project's kernel
	$(BIN)/jupyter lab notebooks

lab-check: $(STAMP) ## Check make lab: a Jupyter server on the project's kernel runs chapter 01 with its literal defaults
	THIRTYMUSIC_LAB_PROFILE=default $(BIN)/python -m pytest tests/test_book_lab.py -m slow $(PYTEST_ARGS)

clean: ## Remove the build folder (executed notebooks, artifacts, the book; keeps .venv)
	rm -rf $(BUILD_DIR)

distclean: clean ## Remove the build folder and .venv
	rm -rf $(VENV)

FORCE:
