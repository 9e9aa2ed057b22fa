# OrderHub: `make run` (demo on SQLite) and `make test` (everything CI runs).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench bench-pages bench-peak clean console browser

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install console
	$(BIN)/orderhub serve --demo

# The web console (console/, React + Vite) is built into the Python package, which serves it at /.
# Rebuilt only when the build is missing or older than a console source; npm ci only when the lock changed.
CONSOLE_DIST := src/orderhub/entrypoints/api/console_dist
CONSOLE_SOURCES := $(shell find console/src -type f 2>/dev/null) $(wildcard console/index.html console/vite.config.ts console/tsconfig.json console/package.json)
NODE_STAMP := console/node_modules/.installed

console: $(CONSOLE_DIST)/index.html

$(NODE_STAMP): console/package-lock.json
	cd console && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(CONSOLE_DIST)/index.html: $(NODE_STAMP) $(CONSOLE_SOURCES)
	cd console && npm run build --silent

# The browser tests drive Debian's chromium (never a browser Playwright downloads) with a CJK font.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BROWSER_PACKAGES := chromium fonts-noto-cjk

browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! fc-list :lang=zh 2>/dev/null | grep -q .; then \
		export DEBIAN_FRONTEND=noninteractive; \
		$(SUDO) apt-get install -y --no-install-recommends $(BROWSER_PACKAGES) \
		|| { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends $(BROWSER_PACKAGES); }; \
	fi

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

# Two workers: most tests wait on sockets and simulators (pytest 624-674 s on 2 cores, 2026-12-04).
# The tests' scratch databases live in memory (/dev/shm) where there is one: with both workers running, a
# SQLite commit's fsync took up to 0.9 s on disk, every other writer waiting; commits still survive a kill.
TEST_TMPDIR ?= $(shell test -d /dev/shm -a -w /dev/shm && echo /dev/shm || echo $${TMPDIR:-/tmp})
test: lint console browser
	TMPDIR=$(TEST_TMPDIR) $(BIN)/pytest -n 2 --dist loadfile

bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# the console's API calls with 100,000 orders in the database (both backends)
bench-pages: install
	$(BIN)/python bench/pages.py $(BENCH_ARGS)

# a 双十一-shaped load (baseline, then a ≥5x burst) through the real stack, embedded (SQLite) and
# scaled (PostgreSQL + NATS, 1 API + 2 workers); the 500,000-order burst: BENCH_ARGS="--burst-orders 500000"
bench-peak: install
	$(BIN)/python bench/peak.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache console/node_modules $(CONSOLE_DIST)
