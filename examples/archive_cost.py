"""Archiving logs.raw to cloud object storage, and what it costs.

`hindsight archive` keeps logs.raw as hourly Avro files (zstandard) under HINDSIGHT_ARCHIVE_DIR. This
example copies them to an object store with the same key layout and estimates the monthly bill from the
archive's measured growth:

    python -m examples.archive_cost estimate --retention-days 365 --price-gb-month 0.004
    python -m examples.archive_cost upload s3://my-bucket/hindsight      # needs boto3 and credentials
    python -m examples.archive_cost upload file:///mnt/archive-bucket    # a mounted bucket or NFS

Uploads are idempotent: an object whose size already matches is skipped, so a cron job can re-run it.
Prices are parameters (defaults roughly an infrequent-access tier), not a quote.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

GB = 1024**3


@dataclass
class Estimate:
    files: int
    bytes: int
    hours: int
    bytes_per_day: float
    retention_days: int
    steady_state_gb: float
    storage_usd_per_month: float
    put_requests_per_month: int
    requests_usd_per_month: float
    total_usd_per_month: float


def archive_files(root: Path) -> Iterator[Path]:
    yield from sorted(p for p in root.rglob("*.avro") if p.is_file())


def estimate(
    root: Path,
    retention_days: int = 365,
    price_gb_month: float = 0.0125,
    price_per_1000_puts: float = 0.01,
) -> Estimate:
    """Steady-state cost: the measured bytes per archived hour, kept for `retention_days`."""
    files = list(archive_files(root))
    total = sum(p.stat().st_size for p in files)
    hours = {p.parent for p in files}  # <topic>/<day>/<hour>/
    per_day = total / len(hours) * 24 if hours else 0.0
    files_per_day = len(files) / len(hours) * 24 if hours else 0.0
    steady_gb = per_day * retention_days / GB
    storage = steady_gb * price_gb_month
    puts = round(files_per_day * 30)
    requests = puts / 1000 * price_per_1000_puts
    return Estimate(
        len(files), total, len(hours), per_day, retention_days, round(steady_gb, 6), round(storage, 4),
        puts, round(requests, 4), round(storage + requests, 4),
    )  # fmt: skip


def upload(root: Path, target: str) -> tuple[int, int]:
    """Copy every archive file to `target` (s3://bucket/prefix or file:///path) under the same relative
    key; returns (uploaded, skipped because already there with the same size)."""
    url = urlsplit(target)
    uploaded = skipped = 0
    if url.scheme == "file":
        base = Path(url.path)
        for path in archive_files(root):
            dest = base / path.relative_to(root)
            if dest.exists() and dest.stat().st_size == path.stat().st_size:
                skipped += 1
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_suffix(".part")
            shutil.copyfile(path, tmp)
            tmp.replace(dest)  # readers never see half an object
            uploaded += 1
        return uploaded, skipped
    if url.scheme == "s3":
        try:
            import boto3  # type: ignore[import-not-found]
        except ImportError:
            raise SystemExit("uploading to s3:// needs boto3: pip install boto3") from None
        s3 = boto3.client("s3")
        prefix = url.path.strip("/")
        for path in archive_files(root):
            key = f"{prefix}/{path.relative_to(root).as_posix()}".lstrip("/")
            try:
                head = s3.head_object(Bucket=url.netloc, Key=key)
                if head["ContentLength"] == path.stat().st_size:
                    skipped += 1
                    continue
            except s3.exceptions.ClientError:
                pass
            s3.upload_file(str(path), url.netloc, key, ExtraArgs={"StorageClass": "STANDARD_IA"})
            uploaded += 1
        return uploaded, skipped
    raise SystemExit(f"unsupported target {target!r}: use s3://bucket/prefix or file:///path")


def main(argv: list[str] | None = None) -> int:
    from pipeline.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("estimate", help="Monthly cost of keeping the archive in object storage.")
    p.add_argument("--retention-days", type=int, default=365)
    p.add_argument("--price-gb-month", type=float, default=0.0125, help="USD per GB-month of storage.")
    p.add_argument("--price-per-1000-puts", type=float, default=0.01, help="USD per 1000 PUT requests.")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("upload", help="Copy the archive to s3://bucket/prefix or file:///path.")
    p.add_argument("target")
    args = parser.parse_args(argv)
    root = Settings().archive_path
    if args.command == "estimate":
        est = estimate(root, args.retention_days, args.price_gb_month, args.price_per_1000_puts)
        if args.json:
            print(json.dumps(asdict(est), indent=2))
        else:
            print(
                f"{est.files} files, {est.bytes:,} bytes over {est.hours} archived hours "
                f"({est.bytes_per_day / 1_048_576:,.1f} MiB/day). Kept {est.retention_days} days: "
                f"{est.steady_state_gb:,.2f} GB, about ${est.total_usd_per_month:,.2f}/month "
                f"(storage ${est.storage_usd_per_month:,.2f}, {est.put_requests_per_month:,} PUTs "
                f"${est.requests_usd_per_month:,.2f})."
            )
        return 0
    uploaded, skipped = upload(root, args.target)
    print(f"uploaded {uploaded} file(s), {skipped} already there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
