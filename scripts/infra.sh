#!/usr/bin/env bash
# Offline checks of the deployment artefacts (no AWS account, no Docker engine needed).
#
#   scripts/infra.sh install   create .venv-lint with pinned cfn-lint and checkov (idempotent)
#   scripts/infra.sh render    write the EventBridge pattern file into the templates holding a rule
#                              (registrar.yaml, event-forwarder.yaml)
#   scripts/infra.sh check     those templates embed the pattern file unchanged; cfn-lint on every
#                              template; checkov on every template and the Dockerfile (skips are
#                              written next to the resource, with their reason)
#
# The moto deployment of the template runs with the other tests (tests/tests/infra.rs).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv-lint"
CFN_LINT_VERSION="1.58.0"
CHECKOV_VERSION="3.3.30"
pattern="$root/infra/eventbridge/agentcore-api-calls.pattern.json"
cfn="$root/infra/cloudformation"
# The templates with the AgentCore rule (each embeds the pattern file once)...
pattern_templates=("$cfn/registrar.yaml" "$cfn/event-forwarder.yaml")
# ...and every template.
templates=("${pattern_templates[@]}" "$cfn/member-account-role.yaml")

# The installed version of a package in the venv ("" when absent). Reads pip's whole answer:
# `pip show | grep -q` would stop pip with SIGPIPE, and pipefail would call that a mismatch.
installed() {
  "$venv/bin/pip" show "$1" 2>/dev/null | sed -n 's/^Version: //p'
}

install() {
  if [ -x "$venv/bin/cfn-lint" ] && [ -x "$venv/bin/checkov" ] \
    && [ "$(installed cfn-lint)" = "$CFN_LINT_VERSION" ] \
    && [ "$(installed checkov)" = "$CHECKOV_VERSION" ]; then
    return 0
  fi
  echo "infra: installing cfn-lint==$CFN_LINT_VERSION checkov==$CHECKOV_VERSION into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "cfn-lint==$CFN_LINT_VERSION" "checkov==$CHECKOV_VERSION"
}

# Rewrites the line after each "# BEGIN pattern" marker with the pattern file as one JSON line.
# With --check, only reports (exit 1) where a template differs.
render() {
  python3 - "$pattern" "$@" "${pattern_templates[@]}" <<'PY'
import json, re, sys
pattern_file, args = sys.argv[1], sys.argv[2:]
check = args and args[0] == "--check"
templates = args[1:] if check else args
line = json.dumps(json.load(open(pattern_file)))
stale = []
for path in templates:
    text = open(path).read()
    block = re.compile(r"(# BEGIN pattern[^\n]*\n(\s*)EventPattern: )([^\n]*)(\n\s*# END pattern)")
    found = block.findall(text)
    if len(found) != 1:
        sys.exit(f"{path}: expected one '# BEGIN pattern' block, found {len(found)}")
    if found[0][2] != line:
        stale.append(path)
        if not check:
            open(path, "w").write(block.sub(lambda m: m.group(1) + line + m.group(4), text))
if check and stale:
    sys.exit("EventPattern differs from " + pattern_file + " in: " + ", ".join(stale) + " (run scripts/infra.sh render)")
PY
}

check() {
  install
  render --check
  echo "infra: templates embed $(basename "$pattern")" >&2
  "$venv/bin/cfn-lint" "${templates[@]}"
  echo "infra: cfn-lint clean" >&2
  # --skip-download: no calls to the vendor's platform (CI has no network beyond registries).
  "$venv/bin/checkov" --quiet --compact --skip-download --framework cloudformation \
    -d "$cfn"
  "$venv/bin/checkov" --quiet --compact --skip-download --framework dockerfile \
    -f "$root/Dockerfile"
}

case "${1:-}" in
  install) install ;;
  render) render ;;
  check) check ;;
  *) echo "usage: $0 install|render|check" >&2; exit 2 ;;
esac
