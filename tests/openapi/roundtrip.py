"""Enqueues an order through the client openapi-python-client generated from
/openapi.json, then reads the job back through it. argv: base URL, API key, package dir."""
import sys

sys.path.insert(0, sys.argv[3])

from conveyor_intake_client import AuthenticatedClient  # noqa: E402
from conveyor_intake_client.api.jobs import create_job, get_job  # noqa: E402
from conveyor_intake_client.models import CreateJobRequest  # noqa: E402

client = AuthenticatedClient(base_url=sys.argv[1], token=sys.argv[2])
body = CreateJobRequest.from_dict({
    "kind": "order.process",
    "args": {
        "order_id": "PY-1",
        "customer": {"email": "ada@example.com", "name": "Ada Lovelace"},
        "items": [{"sku": "MUG", "quantity": 1}],
    },
})
accepted = create_job.sync_detailed(client=client, body=body)
assert accepted.status_code == 202, (accepted.status_code, accepted.content)
job_id = accepted.parsed.id
read = get_job.sync_detailed(client=client, id=job_id)
assert read.status_code == 200, (read.status_code, read.content)
assert str(read.parsed.id) == str(job_id), read.parsed
assert read.parsed.kind == "order.process", read.parsed
print(job_id)
