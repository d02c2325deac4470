# The two commands a new user needs: `make run` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
HOST   ?= 127.0.0.1
PORT   ?= 7860
TORCH_INDEX ?=

.PHONY: install run index test browser bench eval reader-pack clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# CPU-only torch first: an unpinned torch would pull several GB of CUDA packages. This workplace's pip serves
	# the CPU wheel; where pip's index is plain PyPI, pass TORCH_INDEX=https://download.pytorch.org/whl/cpu.
	$(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Incremental: a no-op when the corpus has not changed since the last build. Exit 5 means files were skipped
# (listed with the reason); the rest is indexed, so the server still starts.
index: install
	$(VENV)/bin/assistant index build || test $$? -eq 5

run: index
	$(VENV)/bin/assistant serve --host $(HOST) --port $(PORT)

# Debian's Chromium drives the browser test; no browser can be downloaded here.
browser:
	@test -x /usr/bin/chromium || { SUDO=$$(test "$$(id -u)" -eq 0 || echo sudo); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium fonts-noto-cjk; }

# Every test, then four evals against floors just under the current figures (0.869 answer accuracy on the project's
# questions, 0.619 on its English questions, 0.694 on the independent natural questions, CMRC F1 69.4 with sources of
# 240 characters; the int8 reader, AVX-512 VNNI, 2026-12-07), so a regression fails:
# answer accuracy on the project's questions, and F1 on a fixed slice of CMRC 2018 (the first 200
# questions, all 256 passages indexed). The public datasets live beside the project (../shared/datasets,
# or ASSISTANT_DATASETS); without them the CMRC floor is skipped with a message saying so.
EVAL_FLOOR ?= 0.83
ENGLISH_FLOOR ?= 0.57
CMRC_F1_FLOOR ?= 67
DATASETS ?= $(or $(ASSISTANT_DATASETS),$(abspath ../shared/datasets))
CMRC := $(DATASETS)/cmrc2018/cmrc2018_trial.json
NATURAL_FLOOR ?= 0.66
NATURAL := $(or $(ASSISTANT_EVAL),$(abspath ../shared/eval))/natural_seed.jsonl
test: install browser
	$(PY) -m pytest
	rm -rf .eval-index
	$(VENV)/bin/assistant index build --index .eval-index
	$(VENV)/bin/assistant eval --index .eval-index --no-progress --min-accuracy $(EVAL_FLOOR) > /dev/null
	@echo "eval: answer accuracy is at or above $(EVAL_FLOOR)"
	$(VENV)/bin/assistant eval --index .eval-index --questions corpus/eval/english.jsonl --no-progress \
	  --min-accuracy $(ENGLISH_FLOOR) > /dev/null
	@echo "eval: English questions over the seed article: answer accuracy is at or above $(ENGLISH_FLOOR)"
	@if [ -f "$(NATURAL)" ]; then \
	  $(VENV)/bin/assistant eval --index .eval-index --questions "$(NATURAL)" --no-progress --min-accuracy $(NATURAL_FLOOR) > /dev/null && \
	  echo "eval: natural questions over the seed article: answer accuracy is at or above $(NATURAL_FLOOR)"; \
	else \
	  echo "eval: natural-questions floor SKIPPED: $(NATURAL) is missing (set ASSISTANT_EVAL to the folder holding natural_seed.jsonl)"; \
	fi
	rm -rf .eval-index
	@if [ -f "$(CMRC)" ]; then \
	  $(VENV)/bin/assistant eval --squad "$(CMRC)" --limit 200 --no-progress --min-f1 $(CMRC_F1_FLOOR) && \
	  echo "eval: CMRC 2018 trial (first 200 questions) F1 is at or above $(CMRC_F1_FLOOR)"; \
	else \
	  echo "eval: CMRC floor SKIPPED: $(CMRC) is missing (set ASSISTANT_DATASETS to the folder holding cmrc2018/)"; \
	fi

eval: index
	$(VENV)/bin/assistant eval

bench: index
	$(PY) benchmarks/bench_ask.py

# What a GPU machine needs to train the reader (docs/design.md, "On a machine with a GPU"): the training files'
# windows, the tuning sets cut into windows and the packaged encoder, into data/reader-pack (33 MB).
READER_DATA = $(DATASETS)/cmrc2018/cmrc2018_train.json $(DATASETS)/drcd/DRCD_dev.json $(DATASETS)/drcd/DRCD_test.json \
	$(DATASETS)/dureader/dureader_checklist_train.json
READER_EVAL = $(DATASETS)/cmrc2018/cmrc2018_trial.json $(DATASETS)/dureader/dureader_robust_dev.json \
	$(DATASETS)/dureader/dureader_checklist_dev.json
reader-pack: install
	$(VENV)/bin/assistant train-reader --data $(READER_DATA) --eval $(READER_EVAL) --english-rate 0.2 \
	  --mixed-rate 0.1 --seed 20261208 --pack data/reader-pack

clean:
	rm -rf $(VENV) index/*/ index/CURRENT
