# Sourced by scripts/test and scripts/e2e: makes sure a PostgreSQL server runs
# on 127.0.0.1:5432 with the role the tests log in as, installing it from
# Debian's packages on a bare machine. Idempotent; needs root for the install.

ISSUEOPS_TEST_PG_ROLE=issueops_test
ISSUEOPS_TEST_PG_PASSWORD=issueops_test
# The service role of deploy/postgres/service-role.sql: owns nothing.
ISSUEOPS_TEST_PG_SERVICE_ROLE=issueops_test_service

ensure_postgres() {
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    echo "installing PostgreSQL from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  local version
  version="$(ls /usr/lib/postgresql | sort -V | tail -n1)"
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$version main"; then
    echo "creating PostgreSQL cluster $version/main"
    pg_createcluster "$version" main >/dev/null
  fi
  if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    echo "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    local _
    for _ in $(seq 1 60); do
      pg_isready -h 127.0.0.1 -p 5432 -q && break
      sleep 0.5
    done
    pg_isready -h 127.0.0.1 -p 5432
  fi
  # The tests create and drop one database each, as this role, over TCP with
  # a password (Debian's pg_hba.conf asks for scram-sha-256 on 127.0.0.1).
  runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -d postgres <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$ISSUEOPS_TEST_PG_ROLE') THEN
    CREATE ROLE $ISSUEOPS_TEST_PG_ROLE LOGIN CREATEDB PASSWORD '$ISSUEOPS_TEST_PG_PASSWORD';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$ISSUEOPS_TEST_PG_SERVICE_ROLE') THEN
    CREATE ROLE $ISSUEOPS_TEST_PG_SERVICE_ROLE LOGIN PASSWORD '$ISSUEOPS_TEST_PG_SERVICE_ROLE';
  END IF;
END
\$\$;
SQL
  export ISSUEOPS_TEST_POSTGRES_URL="${ISSUEOPS_TEST_POSTGRES_URL:-postgres://$ISSUEOPS_TEST_PG_ROLE:$ISSUEOPS_TEST_PG_PASSWORD@127.0.0.1:5432}"
  export ISSUEOPS_TEST_POSTGRES_SERVICE_URL="${ISSUEOPS_TEST_POSTGRES_SERVICE_URL:-postgres://$ISSUEOPS_TEST_PG_SERVICE_ROLE:$ISSUEOPS_TEST_PG_SERVICE_ROLE@127.0.0.1:5432}"
}
