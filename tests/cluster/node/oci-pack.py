#!/usr/bin/env python3
"""Packs an OCI image archive that `ctr images import` takes, from layers
given as tar files (used as they are) or folders (packed here), in order.
There is no registry or image builder on the test machine; this is enough
for the test node's pause image and the agent image's test build."""
import argparse, hashlib, io, json, os, tarfile


def add_blob(tar, data):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return {"digest": "sha256:" + digest, "size": len(data)}


def pack_dir(root):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        for base, dirs, files in os.walk(root):
            dirs.sort()
            for name in dirs + sorted(files):
                path = os.path.join(base, name)
                t.add(path, arcname=os.path.relpath(path, root), recursive=False)
    return out.getvalue()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ref", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--entrypoint", required=True, help="JSON list")
    p.add_argument("--user", default="")
    p.add_argument("--workdir", default="/")
    p.add_argument("--layer", action="append", required=True, help="a .tar file or a folder")
    a = p.parse_args()
    layers = []
    for layer in a.layer:
        if os.path.isdir(layer):
            layers.append(pack_dir(layer))
        else:
            with open(layer, "rb") as f:
                layers.append(f.read())
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": json.loads(a.entrypoint), "User": a.user, "WorkingDir": a.workdir,
                   "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(l).hexdigest() for l in layers]},
        # One entry per layer: image builders (buildah) match history to
        # layers and refuse a base without it.
        "history": [{"created_by": f"oci-pack.py --layer {os.path.basename(l)}"} for l in a.layer],
    }
    with tarfile.open(a.out, "w") as tar:
        descs = [dict(mediaType="application/vnd.oci.image.layer.v1.tar", **add_blob(tar, l)) for l in layers]
        cfg = dict(mediaType="application/vnd.oci.image.config.v1+json",
                   **add_blob(tar, json.dumps(config).encode()))
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": cfg, "layers": descs}
        man = add_blob(tar, json.dumps(manifest).encode())
        index = {"schemaVersion": 2, "manifests": [dict(
            mediaType="application/vnd.oci.image.manifest.v1+json", **man,
            annotations={"io.containerd.image.name": a.ref,
                         "org.opencontainers.image.ref.name": a.ref.rsplit(":", 1)[-1]})]}
        for name, data in [("index.json", json.dumps(index).encode()),
                           ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    print(man["digest"])


if __name__ == "__main__":
    main()
