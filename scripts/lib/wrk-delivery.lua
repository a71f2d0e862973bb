-- wrk script for scripts/bench-gateway: every request is a signed GitHub
-- `issues.labeled` delivery with its own X-GitHub-Delivery id. The body (and
-- so its signature) is the same for all, read from BENCH_BODY / BENCH_SIG.
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
  body = f:read("*a")
  f:close()
  sig = os.getenv("BENCH_SIG")
  run = os.getenv("BENCH_RUN")
  counter = 0
end

function request()
  counter = counter + 1
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["X-GitHub-Event"] = "issues",
    ["X-GitHub-Delivery"] = run .. "-" .. tid .. "-" .. counter,
    ["X-Hub-Signature-256"] = sig,
  }, body)
end
