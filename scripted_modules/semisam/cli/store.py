"""``semisam store``: create, fill, list, check, export and import a labeled-set store; manage model versions.

Examples::

    semisam store init ./store --label 1=nodule --modality CT
    semisam store add ./store scan.nrrd mask.nrrd --annotator JD --prompts box=1,point+=2
    semisam store add-unlabeled ./store more/*.nii.gz
    semisam store list ./store
    semisam store export ./store ./Dataset501_Nodules            # nnU-Net v2 raw layout
    semisam store import ./Task06_Lung ./store2                  # MSD or nnU-Net raw layout
    semisam store check ./store --clean
    semisam store add-model ./store ./runs/model --dice 0.81 ; semisam store promote ./store v0002
"""

from __future__ import annotations

import argparse
import json

from semisam.store import LabeledStore, Provenance, StoreError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="the labeled-set store: cases, unlabeled scans, split, model versions")
    # Long: one parser per store sub-command, a few flat lines each, in the order `semisam store -h` lists them.
    p.set_defaults(func=lambda _a: (p.print_help(), 2)[1])
    ss = p.add_subparsers(dest="store_command", metavar="ACTION")

    a = ss.add_parser("init", help="create an empty store with a label table")
    a.add_argument("root", help="new (or empty) folder")
    a.add_argument(
        "--label", action="append", required=True, metavar="VALUE=NAME", help="e.g. 1=lesion; repeat"
    )
    a.add_argument("--modality", help="CT, MR, ...")
    a.add_argument("--name", help="dataset name (default: the folder name)")
    a.set_defaults(func=_friendly_os_errors(cmd_init))

    a = ss.add_parser("add", help="add a labeled case (image + mask + provenance)")
    a.add_argument("root")
    a.add_argument("image", help="scan file (NIfTI, NRRD, MHA) or DICOM folder")
    a.add_argument("mask", help="label map on the image's grid")
    a.add_argument("--id", help="case id (default case_NNNN)")
    a.add_argument("--split", choices=["train", "validation"], help="override the store's split rule")
    a.add_argument("--annotator")
    a.add_argument("--started", help="ISO 8601 time the annotation began")
    a.add_argument("--finished", help="ISO 8601 time it was accepted")
    a.add_argument("--prompts", default="", metavar="KIND=N,...", help="prompt counts, e.g. box=1,point+=3")
    a.add_argument("--model-version", help="model version that proposed the mask")
    a.add_argument("--proposal", help="the proposed mask file; its Dice vs MASK is recorded")
    a.add_argument("--notes")
    a.set_defaults(func=_friendly_os_errors(cmd_add))

    a = ss.add_parser("add-unlabeled", help="register unlabeled scans (copied, or referenced in place)")
    a.add_argument("root")
    a.add_argument("images", nargs="+")
    a.add_argument("--reference", action="store_true", help="keep the scans where they are (store the path)")
    a.set_defaults(func=_friendly_os_errors(cmd_add_unlabeled))

    a = ss.add_parser("list", help="list cases (and unlabeled scans, model versions)")
    a.add_argument("root")
    a.add_argument("--split", choices=["train", "validation"])
    a.add_argument("--json", action="store_true", help="machine-readable records")
    a.set_defaults(func=_friendly_os_errors(cmd_list))

    a = ss.add_parser("export", help="write an MSD / nnU-Net raw dataset folder")
    a.add_argument("root")
    a.add_argument("dest", help="new folder, e.g. Dataset501_Name")
    a.add_argument("--layout", choices=["nnunetv2", "msd"], default="nnunetv2")
    a.add_argument(
        "--skip-damaged",
        action="store_true",
        help="leave out cases whose record is damaged (default: refuse)",
    )
    a.set_defaults(func=_friendly_os_errors(cmd_export))

    a = ss.add_parser(
        "import", help="import an MSD / nnU-Net raw dataset folder (creates the store if needed)"
    )
    a.add_argument("src", help="folder with dataset.json, imagesTr/, labelsTr/ [, imagesTs/]")
    a.add_argument("root")
    a.set_defaults(func=_friendly_os_errors(cmd_import))

    a = ss.add_parser("check", help="check every record and file; --clean removes leftovers of killed writes")
    a.add_argument("root")
    a.add_argument("--clean", action="store_true")
    a.add_argument("--deep", action="store_true", help="also read every image and mask")
    a.set_defaults(func=_friendly_os_errors(cmd_check))

    a = ss.add_parser("add-model", help="register a model folder (manifest.json + weights.safetensors)")
    a.add_argument("root")
    a.add_argument("model_dir")
    a.add_argument("--dice", type=float, help="its Dice on the store's current validation split")
    a.set_defaults(func=_friendly_os_errors(cmd_add_model))

    a = ss.add_parser("promote", help="make a model version active (must beat the active one unless --force)")
    a.add_argument("root")
    a.add_argument("version")
    a.add_argument("--force", action="store_true")
    a.add_argument("--generalist", action="store_true", help="a generalist version (semisam adapt)")
    a.set_defaults(func=_friendly_os_errors(cmd_promote))

    a = ss.add_parser("rollback", help="make the previously active model version active again")
    a.add_argument("root")
    a.add_argument("--generalist", action="store_true", help="the generalist's versions (semisam adapt)")
    a.set_defaults(func=_friendly_os_errors(cmd_rollback))


def _friendly_os_errors(func):
    """Disk full, permission denied...: one line naming the file, like every other store error."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (FileNotFoundError, BrokenPipeError):  # BrokenPipeError: `| head`; semisam.cli.main handles it
            raise
        except OSError as exc:
            raise StoreError(
                f"{exc.strerror or exc}; nothing was changed for the failed item", exc.filename
            ) from exc

    return wrapped


def _parse_labels(items: list[str]) -> dict[int, str]:
    out = {}
    for item in items:
        value, sep, name = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise StoreError(f"--label {item!r}: expected VALUE=NAME, e.g. 1=lesion")
        out[int(value)] = name
    return out


def _parse_prompts(text: str) -> dict[str, int]:
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        kind, sep, n = item.rpartition("=")
        if not sep or not n.isdigit():
            raise StoreError(f"--prompts {item!r}: expected KIND=N, e.g. box=1")
        out[kind] = int(n)
    return out


def cmd_init(args: argparse.Namespace) -> int:
    store = LabeledStore.create(args.root, _parse_labels(args.label), modality=args.modality, name=args.name)
    table = ", ".join(f"{k}={v}" for k, v in store.labels.items())
    print(f"created store {store.root} (labels {table}; modality {store.modality or 'unset'})")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    from semisam.scan.volume import read_mask, read_volume

    store = LabeledStore(args.root)
    prov = Provenance(
        annotator=args.annotator,
        started=args.started,
        finished=args.finished,
        prompts=_parse_prompts(args.prompts),
        model_version=args.model_version,
        tool="semisam store add",
        notes=args.notes,
    )
    proposal = None
    if args.proposal:
        proposal = read_mask(args.proposal, reference=read_volume(args.image)).array
    rec = store.add_case(args.image, args.mask, prov, case_id=args.id, split=args.split, proposal=proposal)
    dice = (
        f", proposal Dice {rec.provenance.proposal_dice:.3f}"
        if rec.provenance.proposal_dice is not None
        else ""
    )
    print(f"added {rec.case_id} ({rec.split}; labels {_fmt_labels(rec.labels)}{dice})")
    return 0


def cmd_add_unlabeled(args: argparse.Namespace) -> int:
    store = LabeledStore(args.root)
    for image in args.images:
        rec = store.add_unlabeled(image, copy=not args.reference)
        how = f"referenced at {rec.reference}" if rec.reference else "copied"
        print(f"added unlabeled {rec.scan_id} ({how})")
    return 0


def _fmt_labels(labels: dict[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in labels.items()) or "empty"


def cmd_list(args: argparse.Namespace) -> int:
    store = LabeledStore(args.root)
    damaged = store.damaged_cases() + store.damaged_unlabeled()
    cases = store.cases(args.split)
    scans = store.unlabeled()
    versions = store.models.versions()
    active = store.models.active()
    from semisam.adapt.versions import GeneralistRegistry

    generalists = GeneralistRegistry(store)
    g_versions, g_active = generalists.versions(), generalists.active()
    if args.json:
        out = {
            "root": str(store.root),
            "labels": {str(k): v for k, v in store.labels.items()},
            "cases": [r.to_json() for r in cases],
            "unlabeled": [s.to_json() for s in scans],
            "models": [v.to_json() for v in versions],
            "active_model": active.version if active else None,
            "generalists": [v.to_json() for v in g_versions],
            "active_generalist": g_active.version if g_active else None,
        }
        out["damaged"] = damaged
        print(json.dumps(out, indent=2))
        return _report_damaged(damaged)
    n_val = sum(r.split == "validation" for r in cases)
    labels = ", ".join(f"{k}={v}" for k, v in store.labels.items() if k)
    print(f"store {store.root}  (labels {labels}; modality {store.modality or 'unset'})")
    print(
        f"{len(cases)} cases ({len(cases) - n_val} train, {n_val} validation), {len(scans)} unlabeled scans, "
        f"{len(versions)} model versions (active: {active.version if active else 'none'})"
    )
    if cases:
        rows = [
            ("ID", "SPLIT", "LABELS (voxels)", "MASK", "PROMPTS", "SECONDS", "DICE", "ANNOTATOR", "ADDED")
        ]
        for r in cases:
            p = r.provenance
            rows.append(
                (
                    r.case_id,
                    r.split,
                    _fmt_labels(r.labels),
                    f"r{r.mask_revision}",
                    str(p.n_prompts),
                    "-" if p.seconds is None else f"{p.seconds:.0f}",
                    "-" if p.proposal_dice is None else f"{p.proposal_dice:.3f}",
                    p.annotator or "-",
                    r.added[:19].replace("T", " "),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for s in scans:
        print(f"unlabeled {s.scan_id}: {s.reference or s.image} {tuple(s.shape_zyx)} (Z, Y, X)")
    for v in versions:
        mark = "*" if active and v.version == active.version else " "
        metrics = " ".join(f"{k}={x:.4f}" for k, x in v.metrics.items()) or "not evaluated"
        print(f"model {mark}{v.version}: {v.arch} (parent {v.parent or '-'}) {metrics}")
    for v in g_versions:
        mark = "*" if g_active and v.version == g_active.version else " "
        metrics = " ".join(f"{k}={x:.4f}" for k, x in v.metrics.items()) or "not evaluated"
        print(f"generalist {mark}{v.version}: adapted {v.arch} decoder {metrics}")
    if g_versions and g_active is None:
        print("generalist: the frozen one answers (no adapted version promoted)")
    return _report_damaged(damaged)


def _report_damaged(damaged: list[str]) -> int:
    """Damaged case / scan records: one line each on stderr and exit code 1 (`store check` says more)."""
    import sys

    for line in damaged:
        print(f"semisam store list: error: damaged record: {line}", file=sys.stderr)
    return 1 if damaged else 0


def cmd_export(args: argparse.Namespace) -> int:
    from semisam.store.decathlon import export_dataset

    store = LabeledStore(args.root)
    out = export_dataset(store, args.dest, layout=args.layout, skip_damaged=args.skip_damaged)
    print(
        f"exported {len(store.cases())} cases ({len(store.validation_ids())} validation) and "
        f"{len(store.unlabeled())} unlabeled scans to {out} ({args.layout} layout)"
    )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from semisam.store.decathlon import import_dataset

    store = import_dataset(args.src, args.root)
    print(
        f"store {store.root} now holds {len(store.cases())} cases ({len(store.validation_ids())} validation) "
        f"and {len(store.unlabeled())} unlabeled scans"
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    store = LabeledStore(args.root, clean=False)
    problems = store.check(clean=args.clean, deep=args.deep)
    for p in problems:
        print(f"problem: {p}")
    print(f"{store.root}: {len(store.cases())} cases, {len(problems)} problem(s)")
    return 1 if problems else 0


def cmd_add_model(args: argparse.Namespace) -> int:
    store = LabeledStore(args.root)
    metrics = None if args.dice is None else {"dice": args.dice}
    v = store.models.add(args.model_dir, metrics=metrics, evaluated_on=store.validation_ids())
    print(f"registered {v.version} ({v.arch}) from {args.model_dir}; not active until promoted")
    return 0


def _registry(args: argparse.Namespace):
    """``(registry, what)``: the specialist's model versions, or with ``--generalist`` the generalist's."""
    store = LabeledStore(args.root)
    if getattr(args, "generalist", False):
        from semisam.adapt.versions import GeneralistRegistry

        return GeneralistRegistry(store), "generalist"
    return store.models, "model"


def cmd_promote(args: argparse.Namespace) -> int:
    reg, what = _registry(args)
    v = reg.promote(args.version, require_better=not args.force)
    print(f"active {what}: {v.version}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    reg, what = _registry(args)
    v = reg.rollback()
    print(f"active {what}: {v.version} (rolled back)")
    return 0
