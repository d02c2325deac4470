# The two commands a new user needs: `make run` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
HOST   ?= 127.0.0.1
PORT   ?= 7860

.PHONY: install run index test browser bench eval clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# CPU-only torch first: an unpinned torch would pull several GB of CUDA packages.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Incremental: a no-op when the corpus has not changed since the last build.
index: install
	$(VENV)/bin/assistant index build

run: index
	$(VENV)/bin/assistant serve --host $(HOST) --port $(PORT)

# Debian's Chromium drives the browser test; no browser can be downloaded here.
browser:
	@test -x /usr/bin/chromium || { apt-get update -q && apt-get install -y -q chromium fonts-noto-cjk; }

# Every test, then the eval against a floor just under the current accuracy (0.944): a regression fails.
EVAL_FLOOR ?= 0.92
test: install browser
	$(PY) -m pytest
	rm -rf .eval-index
	$(VENV)/bin/assistant index build --index .eval-index
	$(VENV)/bin/assistant eval --index .eval-index --no-progress --min-accuracy $(EVAL_FLOOR) > /dev/null
	rm -rf .eval-index
	@echo "eval: answer accuracy is at or above $(EVAL_FLOOR)"

eval: index
	$(VENV)/bin/assistant eval

bench: index
	$(PY) benchmarks/bench_ask.py

clean:
	rm -rf $(VENV) index/*/ index/CURRENT
