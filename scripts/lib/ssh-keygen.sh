# Sourced by scripts/test and scripts/e2e: `ssh-keygen` makes the signing
# keys of the review tests (issueops's own and a reviewer's), and git calls it
# to sign and verify SSH-signed commits. Installs Debian's openssh-client when
# missing; needs root for the install.
ensure_ssh_keygen() {
  if ! command -v ssh-keygen >/dev/null 2>&1; then
    echo "installing openssh-client (ssh-keygen) from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-client >/dev/null
  fi
}
