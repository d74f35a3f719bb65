# RFM segmentation — `make run` (set-up, sample data, history, nightly DAG runs) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
JARS := .ivy/.resolved
# hadoop-aws + the AWS SDK bundle (640 MB): only sessions with an s3:// location load them (make s3-jars)
S3_JARS := .ivy/.resolved-s3
# The S3-compatible server of the tests and `make prod-local STORAGE=s3`: SeaweedFS built from its Go
# module once per machine (about 10-15 min on 2 cores, 233 MB), cached outside the clone.
SEAWEEDFS_MODULE := github.com/seaweedfs/seaweedfs@v0.0.0-20261109003541-7506e5f91cd6
S3_SERVER := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/rfm-segmentation/seaweedfs-4.53/weed
# The lock: every package version `make setup` and docker/Dockerfile install (`make lock` re-resolves it).
LOCK := constraints.txt

# make run: generated sample (see conf/pipeline.yaml `generator`), history up to RUN_FROM - 1,
# then the real DAG night by night over RUN_FROM..RUN_TO.
RUN_FROM ?= 2011-12-07
RUN_TO ?= 2011-12-09
# How the nights run: backfill (an Airflow backfill run by a scheduler: real start times in the
# UI) or dags-test (`airflow dags test` in one process).
RUNNER ?= backfill

.PHONY: help prerequisites setup lock setup-test system-packages run rerun maintain test test-fast lint s3-jars s3-server replay stability-month backtest-clv backtest-value airflow prod-local mlflow-ui compare clean clean-all dashboard bench test-dashboard test-rerun-twice test-incremental-year test-s3 test-cluster test-heavy test-hostile screenshots bench-pipeline fault-injection

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

prerequisites: ## Python 3.11-3.12 and Java 17 on PATH, or a one-line message saying what to install
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else 1)' 2>/dev/null || { \
	  echo "Python 3.11 or 3.12 is needed as '$(PYTHON)' (found: $$($(PYTHON) --version 2>&1)). Install it, or run: make PYTHON=python3.11 ..."; exit 1; }
	@java -version 2>&1 | grep -qE 'version "17[."]' || { \
	  echo "Java 17 is needed for Spark (found: $$(java -version 2>&1 | head -1 || echo none)). Debian/Ubuntu: apt-get install openjdk-17-jre-headless; macOS: brew install openjdk@17"; exit 1; }

setup: prerequisites $(INSTALLED) $(JARS) ## virtualenv with the pinned stack and the Delta jars (what `make run` needs)

setup-test: setup system-packages s3-jars s3-server ## setup, plus what only the tests use: Chromium, PostgreSQL, the S3 server and hadoop-aws

$(INSTALLED): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[dev]'
	touch $@

lock: $(INSTALLED) ## re-resolve the lock (constraints.txt) after changing a pin in pyproject.toml or docker/requirements-image.txt
	$(BIN)/uv pip compile pyproject.toml --extra dev docker/requirements-image.txt --python-version 3.11 \
	  --universal --annotation-style line --quiet -o $(LOCK)

$(JARS): $(INSTALLED)
	$(BIN)/python -m jobs.adapters.spark
	touch $@

s3-jars: $(S3_JARS) ## hadoop-aws matching pyspark's Hadoop, and the AWS SDK bundle, into .ivy (s3:// locations)

$(S3_JARS): $(JARS)
	$(BIN)/python -m jobs.adapters.spark --s3
	touch $@

s3-server: $(S3_SERVER) ## SeaweedFS (a real S3 server for the tests), built once with Go >= 1.25 into the user cache

$(S3_SERVER):
	@command -v go >/dev/null || { echo "Go >= 1.25 is needed to build the S3 server (https://go.dev/dl/ or apt-get install golang)"; exit 1; }
	@set -e; dir=$$(go mod download -json $(SEAWEEDFS_MODULE) | $(PYTHON) -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'); \
	  work=$$(mktemp -d); trap 'rm -rf "$$work"' EXIT; cp -r "$$dir"/. "$$work"; chmod -R u+w "$$work"; \
	  mkdir -p "$(dir $@)"; (cd "$$work" && go build -o "$@.tmp" ./weed); mv "$@.tmp" "$@"; "$@" version

system-packages: ## Debian packages the tests use (PostgreSQL for the scheduled path and prod-local; Chromium for the dashboard tests)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends postgresql; }
	@test -x /usr/bin/chromium || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

run: setup ## end to end on generated data: history, the DAG for RUN_FROM..RUN_TO, the nights' segment exports
	$(BIN)/python -m harness.generate
	$(BIN)/python -m jobs.ops.backfill --source "$$($(BIN)/python -c 'from jobs.config import load_settings; print(load_settings().path("landing_dir"))')" \
	  --until "$$($(BIN)/python -c 'import datetime as d; print(d.date.fromisoformat("$(RUN_FROM)") - d.timedelta(days=1))')"
	$(BIN)/python -m jobs.orchestration nights --from $(RUN_FROM) --to $(RUN_TO) --runner $(RUNNER)
	$(BIN)/python -m jobs.ops.exports --until $(RUN_TO)
	$(BIN)/python -m jobs.ops.summary --run-date $(RUN_TO)

test: setup-test lint ## lint, then the test suite (unit, Spark, validation, DAG, end to end, browser); `heavy` tests have their own targets
	$(BIN)/pytest --durations=40 -m "not heavy" -n 2 --dist loadfile --no-loadscope-reorder

test-fast: setup ## seconds, not minutes: no Spark, no Airflow, no browser, no S3 server (config, rules, landing, dashboard data)
	RFM_TESTS_FAST=1 $(BIN)/pytest -q -m "not spark and not airflow and not e2e and not browser and not realdata and not s3"

lint: setup ## ruff (lint rules incl. Airflow AIR, and format) and import-linter (the layer contracts), as configured in pyproject.toml
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

STABILITY_DIR ?= build/stability-month
stability-month: setup ## issue 14: a real month night by night in-process (2011-08-11..08-31), stability per night type -> $(STABILITY_DIR)/stability.md (long)
	rm -rf "$(STABILITY_DIR)/data"
	RFM__PATHS__DATA_DIR="$(STABILITY_DIR)/data" $(BIN)/python -m jobs.ops.replay --source "$(REAL_DATA)" \
		--until 2011-08-10 --to 2011-08-31 --skip eda --table "$(STABILITY_DIR)/stability.md"

replay: setup ## real data night by night, then their segment exports: make replay SOURCE=file FROM=YYYY-MM-DD TO=YYYY-MM-DD
	@test -n "$(SOURCE)" -a -n "$(FROM)" -a -n "$(TO)" || { echo "usage: make replay SOURCE=path FROM=YYYY-MM-DD TO=YYYY-MM-DD"; exit 2; }
	$(BIN)/python -m jobs.orchestration replay --source "$(SOURCE)" --from $(FROM) --to $(TO) --runner $(RUNNER)
	$(BIN)/python -m jobs.ops.exports --until $(TO)
	$(BIN)/python -m jobs.ops.summary --run-date $(TO)

rerun: setup ## re-run day FROM and every later day in order, in-process: make rerun FROM=YYYY-MM-DD [STEPS="validate ingest"]
	@test -n "$(FROM)" || { echo "usage: make rerun FROM=YYYY-MM-DD"; exit 2; }
	$(BIN)/python -m jobs.ops.rerun --from $(FROM) $(if $(STEPS),--steps $(STEPS))

maintain: setup ## compact (OPTIMIZE) and VACUUM the lake, keeping every recently recorded version; prints files/bytes per table
	$(BIN)/python -m jobs maintain --run-date "$$(date -u +%F)"

airflow: setup ## Airflow UI/API on 127.0.0.1:8080 over this dags folder (Ctrl-C stops it)
	$(BIN)/python -m jobs.orchestration airflow

prod-local: setup $(if $(filter s3,$(STORAGE)),s3-jars s3-server) ## the production path on 127.0.0.1: PostgreSQL, MLflow server, Spark Connect, Airflow scheduler/dag-processor/triggerer/api-server (Ctrl-C stops all) [SPARK_CLUSTER=1: Spark on a standalone master + worker; STORAGE=s3: every location on an S3 server]
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "PostgreSQL is needed: make system-packages (apt-get install postgresql)"; exit 1; }
	$(BIN)/python -m jobs.orchestration prod-local $(if $(SPARK_CLUSTER),--spark-cluster) $(if $(STORAGE),--storage $(STORAGE))

# One worker and no job consumers (they run MLflow's GenAI jobs, which this project does not use):
# the UI answers in seconds on a 2-core machine instead of starting 4 workers and 7 consumers.
mlflow-ui: setup ## MLflow tracking UI on 127.0.0.1:5000 over the pipeline's store (one worker: sized for a small machine)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --workers 1 \
	  --backend-store-uri "$$($(BIN)/python -c 'from jobs.config import load_settings; print(load_settings().tracking_uri)')"

backtest-value: setup ## value predictors over three origins, net revenue: make backtest-value [SOURCE=$(REAL_DATA)] [ORIGINS=2011-03-10,2011-06-09,2011-09-09]
	$(BIN)/python -m harness.backtest_value --source "$(or $(SOURCE),$(REAL_DATA))" $(if $(ORIGINS),--origins $(ORIGINS))

backtest-clv: setup ## CLV model vs naive baseline on a real history: make backtest-clv SOURCE=file [CAL_END=2011-09-09 HOLDOUT_END=2011-12-09]
	@test -n "$(SOURCE)" || { echo "usage: make backtest-clv SOURCE=path [CAL_END=YYYY-MM-DD HOLDOUT_END=YYYY-MM-DD]"; exit 2; }
	$(BIN)/python -m harness.backtest_clv --source "$(SOURCE)" --calibration-end $(or $(CAL_END),2011-09-09) --holdout-end $(or $(HOLDOUT_END),2011-12-09)

compare: setup ## the last LAST nights side by side from MLflow (default 14): make compare LAST=7
	$(BIN)/python -m jobs.ops.compare --last $(or $(LAST),14)

dashboard: setup ## segment explorer (Dash) over the gold tables on 127.0.0.1:8050 (conf/ dashboard:)
	$(BIN)/python -m app

SCREENSHOTS_DIR ?= build/screenshots
screenshots: setup ## the docs' screenshots of every console after a real replay of 2011-12-08..09 in its own data dir (Chromium; ~15 min)
	rm -rf "$(SCREENSHOTS_DIR)/data"
	RFM__PATHS__DATA_DIR="$(abspath $(SCREENSHOTS_DIR))/data" $(MAKE) replay SOURCE="$(REAL_DATA)" FROM=2011-12-08 TO=2011-12-09
	RFM__PATHS__DATA_DIR="$(abspath $(SCREENSHOTS_DIR))/data" $(BIN)/python -m harness.screenshot --date 2011-12-09 --consoles

test-rerun-twice: setup ## slow (two full runs): `make run` twice in one data dir, gold business columns identical
	$(BIN)/pytest -q tests/test_make_run_twice.py

test-dashboard: setup-test ## only the dashboard tests (data layer, then Chromium); no Spark
	$(BIN)/pytest tests/test_dashboard_data.py tests/test_dashboard_browser.py

bench: setup ## dashboard timings, real data x1 vs x100 (needs ../shared/data; BENCH_ARGS="--real-lake-dir DIR" reuses a run)
	$(BIN)/python -m harness.bench_dashboard $(BENCH_ARGS)

REAL_DATA ?= ../shared/data/online_retail.csv.gz
FACTORS ?= 1 10

test-incremental-year: setup ## incremental RFM vs compute_rfm every night of the real year, re-runs included (long; own temp lake)
	RFM__PATHS__DATA_DIR="$$(mktemp -d)" $(BIN)/python -m harness.check_incremental --source "$(REAL_DATA)" \
	  --from 2010-12-02 --to 2011-12-09 --rerun-every 7

fault-injection: setup ## SIGKILL a retrain night at every fault point, re-run it, check it converged (FAULTS_ARGS="--points ..."; "--storage-outage": stop the S3 server mid-step instead)
	$(BIN)/python -m harness.fault_injection $(FAULTS_ARGS)

test-heavy: setup-test ## the `heavy` tests CI leaves out: Spark cluster, tasks one by one as Spark Connect clients, the real-month incremental check with re-runs, `make run` twice
	$(BIN)/pytest --durations=0 -m heavy

test-s3: setup-test ## on a real S3 server (SeaweedFS, 127.0.0.1): two whole nights read back by delta-rs alone, and the server stopped in the middle of a step (long)
	$(BIN)/pytest -q -s tests/test_object_storage.py tests/test_object_storage_nights.py tests/test_storage_outage.py tests/test_validation_on_bucket.py

test-hostile: setup-test ## the whole hostile corpus: every case through the landing inventory, every accepted one through validate and ingest (several minutes)
	$(BIN)/pytest -q tests/test_hostile.py tests/test_hostile_spark.py -m "heavy or not heavy" --durations=10

test-cluster: setup ## one night on a Spark standalone master + worker (127.0.0.1) started from the pip pyspark
	$(BIN)/pytest -q tests/test_spark_cluster.py

bench-pipeline: setup ## Spark RFM vs DuckDB, incremental vs full silver, backfill and nights task by task (wall, peak RSS) at xN of the real file: make bench-pipeline FACTORS="1 10 100" [CONNECT=1: tasks as Spark Connect clients] [STORAGE=s3: the nights on a bucket too, beside disk]
	RFM__PATHS__DATA_DIR="$$(mktemp -d)" $(BIN)/python -m harness.bench_pipeline --source "$(REAL_DATA)" --factor $(FACTORS) --nights $(if $(CONNECT),--connect) $(if $(filter s3,$(STORAGE)),--storage s3)

clean: ## remove run outputs (data dir: landing, lake, validation, MLflow, Airflow home)
	rm -rf data spark-warehouse metastore_db derby.log .pytest_cache

clean-all: clean ## also the virtualenv and the Delta jar cache
	rm -rf $(VENV) .ivy
