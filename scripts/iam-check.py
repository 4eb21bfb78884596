#!/usr/bin/env python3
"""Every AWS call the tests made is allowed by the policy the stack gives its principal.

Reads the call log the `registrar` processes wrote during the tests (REGISTRAR_AWS_CALL_LOG:
one `<principal>\t<iam action>` line per call; see crates/worker/src/aws/clients.rs), renders the
policies of infra/ (the CloudFormation templates, intrinsic functions resolved for a deployment
with a worker and member accounts, and infra/iam/operator-policy.json), and evaluates each action
with moto's IAM policy evaluator (moto.iam.access_control.IAMPolicy) against each principal's
policies: the worker task role (`task`), the operator policy (`operator`, both the template's and
the standalone file), the member-account role (`member`).

Exit 1 when any call is not allowed. Actions a policy grants that no test used are reported.
What it proves: actions, per principal. Resources are checked only as far as the policy's own
resources go (an action allowed on some resource the policy names counts), and conditions are not.

Usage: iam-check.py <call log>   (run with the moto venv's python)
"""

import json
import re
import sys
from pathlib import Path

import yaml
from moto.iam.access_control import IAMPolicy, PermissionResult

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT, REGION, PARTITION, STACK = "123456789012", "us-east-1", "aws", "agentcore-registrar"
# The deployment whose policies are proven: a worker, member accounts, an external id, no
# explicit Cognito pool list (the broadest default grant).
TRUE_CONDITIONS = {"WithWorker", "HasMembers", "WorkerWithMembers", "HasAlarmTopic",
                   "WithTrail", "WorkerWithExternalId"}


# Not our calls: services make them with the caller's credentials when a table, queue or secret
# is encrypted with the stack's key.
IMPLIED = {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"}
# How AWS authorizes some calls: SQS batch calls by the single action's permission; STS
# GetCallerIdentity needs no permission at all.
AUTHORIZED_AS = {"sqs:DeleteMessageBatch": "sqs:DeleteMessage",
                 "sqs:SendMessageBatch": "sqs:SendMessage",
                 "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility"}
NEEDS_NO_PERMISSION = {"sts:GetCallerIdentity"}


class Tagged(dict):
    pass


def _tag(name):
    def construct(loader, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        key = name if name in ("Ref", "Condition") else f"Fn::{name}"
        return Tagged({key: value})
    return construct


class Loader(yaml.SafeLoader):
    pass


for _name in ["Ref", "Sub", "GetAtt", "If", "Join", "Select", "Split", "Equals", "Not", "And",
              "Or", "Condition", "FindInMap", "Base64", "GetAZs", "ImportValue", "Cidr"]:
    Loader.add_constructor(f"!{_name}", _tag(_name))


def load(path):
    return yaml.load(path.read_text(), Loader=Loader)


def render(value, template):
    """The value as a deployment would see it: pseudo parameters and defaults resolved,
    resources replaced by ARNs that name them."""
    params = template.get("Parameters", {})
    resources = template.get("Resources", {})

    def ref(name):
        pseudo = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": PARTITION,
                  "AWS::StackName": STACK, "AWS::NoValue": None, "AWS::URLSuffix": "amazonaws.com"}
        if name in pseudo:
            return pseudo[name]
        if name in params:
            default = params[name].get("Default", "")
            if params[name].get("Type") == "CommaDelimitedList":
                return [v for v in str(default).split(",") if v]
            return default or f"param-{name}"
        if name in resources:
            return arn_of(name, resources[name]["Type"])
        raise KeyError(name)

    def go(v):
        if isinstance(v, list):
            out = [go(x) for x in v]
            return [x for x in out if x is not None]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (k, a), = v.items()
            if k == "Ref":
                return ref(a)
            if k == "Fn::Sub":
                text, extra = (a, {}) if isinstance(a, str) else (a[0], a[1])
                def sub(m):
                    key = m.group(1)
                    if key in extra:
                        return str(go(extra[key]))
                    if "." in key:
                        res, _attr = key.split(".", 1)
                        return arn_of(res, resources[res]["Type"])
                    r = ref(key)
                    return ",".join(r) if isinstance(r, list) else str(r)
                return re.sub(r"\$\{([^}!]+)\}", sub, text)
            if k == "Fn::GetAtt":
                res = a[0] if isinstance(a, list) else a.split(".")[0]
                return arn_of(res, resources[res]["Type"])
            if k == "Fn::If":
                return go(a[1] if a[0] in TRUE_CONDITIONS else a[2])
            if k == "Fn::Join":
                parts = go(a[1])
                return a[0].join(str(p) for p in (parts if isinstance(parts, list) else [parts]))
        return {k: go(x) for k, x in v.items()}

    return go(value)


def arn_of(logical, rtype):
    service = rtype.split("::")[1].lower()
    service = {"secretsmanager": "secretsmanager", "dynamodb": "dynamodb", "sqs": "sqs",
               "kms": "kms", "iam": "iam", "events": "events", "logs": "logs"}.get(service, service)
    return f"arn:{PARTITION}:{service}:{REGION}:{ACCOUNT}:{logical}"


def role_policies(template, role):
    """Inline policies of a role, and AWS::IAM::Policy resources attached to it."""
    docs = []
    resources = template["Resources"]
    for p in resources[role]["Properties"].get("Policies", []):
        docs.append(render(p["PolicyDocument"], template))
    for name, r in resources.items():
        if r["Type"] == "AWS::IAM::Policy" and any(
                (x.get("Ref") if isinstance(x, dict) else x) == role
                for x in r["Properties"].get("Roles", [])):
            docs.append(render(r["Properties"]["PolicyDocument"], template))
    return docs


def principals():
    central = load(ROOT / "infra/cloudformation/registrar.yaml")
    member = load(ROOT / "infra/cloudformation/member-account-role.yaml")
    standalone = json.loads((ROOT / "infra/iam/operator-policy.json").read_text()
                            .replace("ACCOUNT_ID", ACCOUNT).replace("REGION", REGION))
    operator_template = render(central["Resources"]["OperatorPolicy"]["Properties"]["PolicyDocument"], central)
    return {
        "task": {"the task role": role_policies(central, "TaskRole")},
        # Both operator policies must allow what the operator commands do.
        "operator": {"the template's OperatorPolicy": [operator_template],
                     "infra/iam/operator-policy.json": [standalone]},
        "member": {"the member-account ReaderRole": role_policies(member, "ReaderRole")},
    }


def execution_role_gaps():
    """The ECS agent reads each secret the task definition injects with the execution role."""
    central = load(ROOT / "infra/cloudformation/registrar.yaml")
    docs = role_policies(central, "ExecutionRole")
    gaps = []
    for container in render(central["Resources"]["TaskDefinition"]["Properties"], central)["ContainerDefinitions"]:
        for secret in container.get("Secrets", []):
            allowed_here = any(
                IAMPolicy(json.dumps(doc)).is_action_permitted("secretsmanager:GetSecretValue", secret["ValueFrom"])
                == PermissionResult.PERMITTED for doc in docs)
            print(f"  execution role reads {secret['Name']} from {secret['ValueFrom']}: "
                  f"{'allowed' if allowed_here else 'NOT allowed'}")
            if not allowed_here:
                gaps.append(f"execution: secretsmanager:GetSecretValue on {secret['ValueFrom']} "
                            f"({secret['Name']}) is not allowed by the ExecutionRole")
    return gaps


def statements(doc):
    s = doc["Statement"]
    return s if isinstance(s, list) else [s]


def resources_of(doc):
    out = set()
    for st in statements(doc):
        r = st.get("Resource", "*")
        out.update(r if isinstance(r, list) else [r])
    return out or {"*"}


def allowed(docs, action):
    """PERMITTED by moto's evaluator on some resource the policies name, and DENIED by none."""
    if action in NEEDS_NO_PERMISSION:
        return True
    action = AUTHORIZED_AS.get(action, action)
    permitted = False
    for doc in docs:
        policy = IAMPolicy(json.dumps(doc))
        for resource in resources_of(doc):
            # The policy's own resource patterns stand for the resources the call names.
            concrete = resource.replace("*", "x")
            result = policy.is_action_permitted(action, concrete)
            if result == PermissionResult.DENIED:
                return False
            permitted |= result == PermissionResult.PERMITTED
    return permitted


def granted_actions(docs):
    out = set()
    for doc in docs:
        for st in statements(doc):
            if st.get("Effect") != "Allow":
                continue
            a = st.get("Action", [])
            out.update(a if isinstance(a, list) else [a])
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    log = Path(sys.argv[1])
    if not log.exists():
        sys.exit(f"iam-check: no call log at {log}: did the tests run with REGISTRAR_AWS_CALL_LOG?")
    calls = {}
    for line in log.read_text().splitlines():
        if "\t" in line:
            principal, action = line.split("\t", 1)
            calls.setdefault(principal, {}).setdefault(action, 0)
            calls[principal][action] += 1
    policies = principals()
    missing = []
    for principal in sorted(set(calls) - set(policies)):
        print(f"  {principal}: not a principal of the stack (local runs), not checked")
    for principal, actions in sorted(calls.items()):
        for name, docs in policies.get(principal, {}).items():
            for action in sorted(actions):
                if not allowed(docs, action):
                    missing.append(f"{principal}: {action} ({actions[action]} calls) is not allowed by {name}")
    print(f"iam-check: {sum(len(a) for a in calls.values())} distinct actions in "
          f"{sum(sum(a.values()) for a in calls.values())} calls, by principal:")
    for principal, actions in sorted(calls.items()):
        print(f"  {principal}: {', '.join(sorted(actions))}")
    for principal, named in sorted(policies.items()):
        used = calls.get(principal, {})
        for name, docs in named.items():
            used_as = {AUTHORIZED_AS.get(u, u) for u in used}
            unused = sorted(a for a in granted_actions(docs) - IMPLIED
                            if not any(IAMPolicy(json.dumps({"Statement": [{"Effect": "Allow", "Action": a, "Resource": "*"}]}))
                                       .is_action_permitted(u, "*") == PermissionResult.PERMITTED for u in used_as))
            if unused:
                print(f"  granted to {principal} by {name} but never used in the tests: {', '.join(unused)}")
    print(f"  made on the caller's behalf by DynamoDB, SQS and Secrets Manager (customer-managed key), "
          f"so never in the log: {', '.join(sorted(IMPLIED))}")
    missing.extend(execution_role_gaps())
    if missing:
        print("iam-check: FAILED, calls the shipped policies do not allow:")
        for m in missing:
            print(f"  {m}")
        sys.exit(1)
    print("iam-check: every call is allowed by its principal's policies")


if __name__ == "__main__":
    main()
