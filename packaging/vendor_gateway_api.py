#!/usr/bin/env python3
"""Copy the Gateway API CRDs the cluster build fetched into the package, for the sandbox to serve.

The sandbox serves the Gateway API kinds from the upstream CustomResourceDefinitions of the
standard channel, at the version cluster/go/gateway-api/go.mod pins (what Traefik 3.7 is built
against). It must do so from an installed wheel, with no Go toolchain, so the CRDs travel as package
data: one JSON list, xz-compressed (about 34 KB for 700 KB of schemas), in canaryd/data/gateway-api/.

    .venv/bin/python packaging/vendor_gateway_api.py          # (re)write the file from the build cache
    .venv/bin/python packaging/vendor_gateway_api.py --check  # exit 1 if the file differs from the CRDs

The CRDs come from `scripts/cluster build` (fetched through the Go module proxy on first use).
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from canaryd.sandbox.server import gateway_api  # noqa: E402
from cluster import build  # noqa: E402


def upstream_crds() -> list[dict[str, Any]]:
    """The CustomResourceDefinitions of the channel's install files, in file name order."""
    build.ensure(["gateway-api"], echo=not build.is_cached("gateway-api"), stream=sys.stderr)
    directory = build.crd_dir(gateway_api.CHANNEL)
    return [
        document
        for path in sorted(directory.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition"
    ]


def encode(crds: list[dict[str, Any]]) -> bytes:
    return lzma.compress(json.dumps(crds, separators=(",", ":"), sort_keys=True).encode(), preset=9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    args = parser.parse_args(argv)
    if build.gateway_api_version() != gateway_api.VERSION:
        print(
            f"cluster/go/gateway-api/go.mod pins {build.gateway_api_version()}, "
            f"canaryd/sandbox/server/gateway_api.py says {gateway_api.VERSION}: make them agree",
            file=sys.stderr,
        )
        return 1
    crds = upstream_crds()
    target = ROOT / "canaryd" / "data" / Path(*gateway_api.DATA_FILE)
    if args.check:
        current = json.loads(lzma.decompress(target.read_bytes())) if target.exists() else None
        if current != crds:
            stale = f"{target.relative_to(ROOT)} is stale: run packaging/vendor_gateway_api.py"
            print(stale, file=sys.stderr)
            return 1
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(encode(crds))
    print(f"{target.relative_to(ROOT)}: {len(crds)} CRDs, {target.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
