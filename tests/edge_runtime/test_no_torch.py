"""The edge runtime works where torch cannot be imported at all."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import json, sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is not installed on this device")

    sys.meta_path.insert(0, NoTorch())
    try:
        import torch  # noqa: F401
        sys.exit("torch imported: the block does not work")
    except ImportError:
        pass

    from pocketrank.edge_runtime import EdgeClient

    db, key = sys.argv[1], sys.argv[2]
    client = EdgeClient(db, key, base_url="http://127.0.0.1:9", latency_budget=0.05)
    before = client.recommend("196", 10)
    client.track("196", "click", before.items[1].item_id)
    after = client.recommend("196", 10)
    heavy = sorted(m for m in ("torch", "flask", "onnx", "server", "exporter", "pocketrank.server",
                               "pocketrank.exporter") if m in sys.modules)
    print(json.dumps({"source": before.source, "n": len(before.items), "after": after.source,
                      "changed": before.item_ids != after.item_ids, "heavy": heavy}))
""")


def test_offline_recommend_without_torch(device, tmp_path):
    device.sync(["196"])
    db = device.cache.db.conn.execute("PRAGMA database_list").fetchone()[2]
    key = device.public_key.public_bytes_raw().hex()
    device.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, db, key], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"source": "edge", "n": 10, "after": "edge", "changed": True, "heavy": []}
