"""`fcl trainer`: the trainer worker, the one place that joins storage, trainers and event
publishing. Several share one PostgreSQL queue, on one machine or many.

- `loop`: the worker's loop (claim, heartbeats, lease expiry, drain) over a `storage.queue.WorkerQueue`;
- `job`: one claimed job, from its inputs to its recorded outcome;
- `runner`: training children (a fork server that has imported torch and scikit-learn);
- `child`: what runs in a training child (load samples, fit or re-evaluate, write the artifact);
- `messages`: the typed messages between the worker and its child;
- `main`: wiring for `fcl trainer`.
"""
