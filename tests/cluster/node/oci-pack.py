#!/usr/bin/env python3
"""Packs a folder as a one-layer OCI image archive that `ctr images import` takes."""
import hashlib, io, json, os, sys, tarfile, time

def blob(tar, data):
    d = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{d}"); info.size = len(data); info.mtime = 0
    tar.addfile(info, io.BytesIO(data))
    return "sha256:" + d, len(data)

def main(rootfs, ref, out, entrypoint, user):
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        for base, dirs, files in os.walk(rootfs):
            dirs.sort(); files.sort()
            for name in dirs + files:
                path = os.path.join(base, name)
                t.add(path, arcname=os.path.relpath(path, rootfs), recursive=False)
    layer = layer.getvalue()
    diff = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Entrypoint": json.loads(entrypoint), "User": user, "WorkingDir": "/",
                         "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
              "rootfs": {"type": "layers", "diff_ids": [diff]}}
    with tarfile.open(out, "w") as tar:
        ld, ls = blob(tar, layer)
        cd, cs = blob(tar, json.dumps(config).encode())
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}]}
        md, ms = blob(tar, json.dumps(manifest).encode())
        index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "digest": md, "size": ms,
                 "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref.rsplit(":",1)[-1]}}]}
        for name, data in [("index.json", json.dumps(index).encode()), ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')]:
            info = tarfile.TarInfo(name); info.size = len(data); tar.addfile(info, io.BytesIO(data))
    print(md)

if __name__ == "__main__":
    main(*sys.argv[1:])
