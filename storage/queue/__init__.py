"""The owner of a training job's life: every transition of a job happens here and nowhere else.

    admit ──▶ queued ──claim──▶ in_progress ──complete──▶ completed
                ▲  ▲               │  │  │
                │  └─fail/release──┘  │  └─fail (no attempts left)──▶ failed
                │    expire (lease)   └─cancel (asked) ──▶ cancelled
                └─retry (operator) ◀── failed | cancelled         queued ──cancel──▶ cancelled

Each transition is one transaction that writes the job, the attempt row (`training_events`) of an
attempt that ended, and the outbox rows of the events it announces; it checks the lease where a
worker holds one (`LeaseLost` otherwise) and returns a frozen `Transition`. The `training-status`
event of a transition is built in `events.py` and nowhere else. The relays hear of the outbox
rows through PostgreSQL (`NOTIFY fcl_outbox`, migration 0006), not through calls from here.

A job that goes back to the queue (retry, lease expiry, release) while another job of the same
dataset and model type already waits is merged into that one: its triggers move over and the
waiting job takes the higher priority, so there is still one waiting job per pair and nothing
that asked for a training is lost.

`JobQueue` (`transitions.py`) works inside the caller's transaction (so admission can share one with the stream's
dead letters); `storage.stores.WorkerStore` is what a trainer worker uses, one transaction per
call. Every statement of the state machine is plain SQL in this package: the set-based admission
and claim in `statements.py`, the status event in `events.py`, the transitions in
`transitions.py`.
"""

from fcl.storage.queue.events import status_event, status_event_sql
from fcl.storage.queue.statements import ADMIT_SQL, CLAIM_CANDIDATE_SQL, CLAIM_SQL
from fcl.storage.queue.transitions import JobQueue

__all__ = ["ADMIT_SQL", "CLAIM_CANDIDATE_SQL", "CLAIM_SQL", "JobQueue", "status_event", "status_event_sql"]
