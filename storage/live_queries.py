"""The named SQL statements of the live loop (`storage/live.py` runs them): the join of predictions
and outcomes, the live figures, the retrain reasons and the shadow challenger's."""

QUERIES: dict[str, str] = {
    # A prediction's transaction and an outcome's for the same id, committed at the same time, would
    # each miss the other (the outcome waits, the prediction finds nothing waiting): predictions
    # take this lock shared (they run side by side), outcomes exclusive, so one of the two always
    # sees the other's commit.
    "predictions_lock": "SELECT pg_advisory_xact_lock_shared(hashtext('fcl-live-join'))",
    "outcomes_lock": "SELECT pg_advisory_xact_lock(hashtext('fcl-live-join'))",
    # the versions of these (model type, version) pairs that exist and can be predicted with
    "known_versions": """
        SELECT v.model_type, v.version
        FROM model_versions AS v
        JOIN unnest(CAST(:types AS text[]), CAST(:versions AS int[])) AS k(model_type, version)
          ON v.model_type = k.model_type AND v.version = k.version
    """,
    "insert_predictions": """
        INSERT INTO predictions (prediction_id, event_id, model_type, version, subject, inputs, inputs_digest,
                                 prediction, occurred_at)
        SELECT p.prediction_id, p.event_id, p.model_type, p.version, p.subject, CAST(p.inputs AS jsonb),
               p.inputs_digest, CAST(p.prediction AS jsonb), p.occurred_at
        FROM unnest(CAST(:prediction_ids AS text[]), CAST(:event_ids AS text[]), CAST(:types AS text[]),
                    CAST(:versions AS int[]), CAST(:subjects AS text[]), CAST(:inputs AS text[]),
                    CAST(:digests AS text[]), CAST(:predictions AS text[]), CAST(:occurred AS timestamptz[]))
             AS p(prediction_id, event_id, model_type, version, subject, inputs, inputs_digest, prediction,
                  occurred_at)
        ORDER BY p.prediction_id
        ON CONFLICT DO NOTHING
        RETURNING prediction_id
    """,
    "seen_versions": """
        INSERT INTO live_versions AS l (model_type, version, last_prediction_at)
        SELECT k.model_type, k.version, now()
        FROM unnest(CAST(:types AS text[]), CAST(:versions AS int[])) AS k(model_type, version) ORDER BY 1, 2
        ON CONFLICT (model_type, version) DO UPDATE SET last_prediction_at = EXCLUDED.last_prediction_at
    """,
    # the outcomes that waited for these new predictions: the earliest joins, the rest are counted
    "take_waiting": """
        WITH taken AS (
            DELETE FROM waiting_outcomes AS w USING predictions AS p
            WHERE w.prediction_id = ANY(CAST(:prediction_ids AS text[])) AND p.prediction_id = w.prediction_id
              AND (w.model_type IS NULL OR w.model_type = p.model_type)
            RETURNING w.*
        ), ranked AS (
            SELECT *, row_number() OVER (PARTITION BY prediction_id ORDER BY occurred_at, event_id) AS n,
                   count(*) OVER (PARTITION BY prediction_id) AS outcomes
            FROM taken
        )
        UPDATE predictions AS p
        SET outcome = r.outcome, outcome_event_id = r.event_id, outcome_occurred_at = r.occurred_at,
            outcome_received_at = r.received_at, repeated_outcomes = r.outcomes - 1
        FROM ranked AS r
        WHERE r.n = 1 AND p.prediction_id = r.prediction_id
    """,
    "predictions_of_outcomes": """
        SELECT prediction_id, model_type, outcome_event_id FROM predictions
        WHERE prediction_id = ANY(CAST(:prediction_ids AS text[]))
        ORDER BY prediction_id
        FOR UPDATE
    """,
    "waiting_known": "SELECT event_id FROM waiting_outcomes WHERE event_id = ANY(CAST(:event_ids AS text[]))",
    "join_outcomes": """
        UPDATE predictions AS p
        SET outcome = CAST(o.outcome AS jsonb), outcome_event_id = o.event_id, outcome_occurred_at = o.occurred_at,
            outcome_received_at = now()
        FROM unnest(CAST(:prediction_ids AS text[]), CAST(:event_ids AS text[]), CAST(:outcomes AS text[]),
                    CAST(:occurred AS timestamptz[])) AS o(prediction_id, event_id, outcome, occurred_at)
        WHERE p.prediction_id = o.prediction_id
    """,
    "count_repeated": """
        UPDATE predictions AS p SET repeated_outcomes = p.repeated_outcomes + r.n
        FROM unnest(CAST(:prediction_ids AS text[]), CAST(:counts AS int[])) AS r(prediction_id, n)
        WHERE p.prediction_id = r.prediction_id
    """,
    "wait": """
        INSERT INTO waiting_outcomes (event_id, prediction_id, model_type, outcome, occurred_at)
        SELECT o.event_id, o.prediction_id, o.model_type, CAST(o.outcome AS jsonb), o.occurred_at
        FROM unnest(CAST(:event_ids AS text[]), CAST(:prediction_ids AS text[]), CAST(:types AS text[]),
                    CAST(:outcomes AS text[]), CAST(:occurred AS timestamptz[]))
             AS o(event_id, prediction_id, model_type, outcome, occurred_at)
        ON CONFLICT DO NOTHING
    """,
    # -- the live evaluation ---------------------------------------------------------------------
    "take_turn": """
        UPDATE live_turn SET taken_at = now() WHERE id = 1 AND taken_at <= now() - make_interval(secs => :every)
        RETURNING taken_at
    """,
    "versions_to_evaluate": """
        SELECT l.model_type, l.version, v.metrics, v.profile
        FROM live_versions AS l JOIN model_versions AS v USING (model_type, version)
        WHERE l.last_prediction_at > now() - make_interval(secs => :within)
        ORDER BY 1, 2
    """,
    # the counts of every window in one pass (an outcome is late when it came more than its
    # window's width after its prediction)
    "window_counts": """
        SELECT w.name, count(p.prediction_id) AS predictions, count(p.outcome) AS with_outcome,
               coalesce(sum(p.repeated_outcomes), 0) AS repeated_outcomes,
               count(p.prediction_id) FILTER (
                   WHERE p.outcome_received_at > p.received_at + make_interval(secs => w.late)) AS late
        FROM unnest(CAST(:names AS text[]), CAST(:sinces AS timestamptz[]), CAST(:lates AS float8[]))
             AS w(name, since, late)
        LEFT JOIN predictions AS p ON p.model_type = :model_type AND p.version = :version
             AND p.occurred_at > w.since AND p.occurred_at <= :until
        GROUP BY w.name
    """,
    # the newest pairs of the widest window: each narrower window's are a prefix of them
    "window_pairs": """
        SELECT inputs, prediction, outcome, occurred_at FROM predictions
        WHERE model_type = :model_type AND version = :version AND occurred_at > :since AND occurred_at <= :until
        ORDER BY occurred_at DESC
        LIMIT :limit
    """,
    "unknown_outcomes": """
        SELECT count(*) FROM waiting_outcomes WHERE model_type IS NULL OR model_type = :model_type
    """,
    "save_figures": """
        INSERT INTO live_figures AS f (model_type, version, "window", figures, computed_at)
        VALUES (:model_type, :version, :window, CAST(:figures AS jsonb), now())
        ON CONFLICT (model_type, version, "window")
        DO UPDATE SET figures = EXCLUDED.figures, computed_at = EXCLUDED.computed_at
    """,
    "figures": """
        SELECT figures, computed_at FROM live_figures WHERE model_type = :model_type AND version = :version
          AND "window" = :window
    """,
    # the figures computed recently (of the versions predictions were logged for lately)
    "all_figures": """
        SELECT model_type, version, "window", figures FROM live_figures
        WHERE computed_at > now() - interval '2 days' ORDER BY 1, 2, 3
    """,
    # -- retraining for a reason -------------------------------------------------------------------
    "champions": """
        SELECT DISTINCT ON (l.model_type) l.model_type, l.version, v.dataset_id,
               extract(epoch FROM now() - v.created_at) AS age_seconds
        FROM champion_ledger AS l JOIN model_versions AS v USING (model_type, version)
        ORDER BY l.model_type, l.seq DESC
    """,
    "fire": """
        INSERT INTO retrain_reasons (model_type, version, "window", kind, figures)
        VALUES (:model_type, :version, :window, :kind, CAST(:figures AS jsonb))
        ON CONFLICT DO NOTHING
        RETURNING fired_at
    """,
    "fired": """
        UPDATE retrain_reasons SET job_id = :job_id
        WHERE model_type = :model_type AND version = :version AND "window" = :window AND kind = :kind
    """,
    # -- the shadow challenger -------------------------------------------------------------------
    "insert_shadow_predictions": """
        INSERT INTO shadow_predictions (prediction_id, event_id, model_type, version, prediction, occurred_at)
        SELECT p.prediction_id, p.event_id, p.model_type, p.version, CAST(p.prediction AS jsonb), p.occurred_at
        FROM unnest(CAST(:prediction_ids AS text[]), CAST(:event_ids AS text[]), CAST(:types AS text[]),
                    CAST(:versions AS int[]), CAST(:predictions AS text[]), CAST(:occurred AS timestamptz[]))
             AS p(prediction_id, event_id, model_type, version, prediction, occurred_at)
        ORDER BY p.prediction_id
        ON CONFLICT DO NOTHING
        RETURNING prediction_id
    """,
    "set_shadow": """
        INSERT INTO shadow_versions AS s (model_type, version, actor)
        SELECT v.model_type, v.version, :actor FROM model_versions AS v
        WHERE v.model_type = :model_type AND v.version = :version
        ON CONFLICT (model_type) DO UPDATE SET version = EXCLUDED.version, actor = EXCLUDED.actor, set_at = now()
        RETURNING s.model_type, s.version, s.actor, s.set_at
    """,
    "clear_shadow": """
        WITH gone AS (DELETE FROM shadow_versions WHERE model_type = :model_type RETURNING model_type, version)
        DELETE FROM shadow_figures AS f USING gone WHERE f.model_type = gone.model_type
    """,
    "shadow_cleared": "SELECT version FROM shadow_versions WHERE model_type = :model_type",
    "shadow": "SELECT model_type, version, actor, set_at FROM shadow_versions WHERE model_type = :model_type",
    "shadows": "SELECT model_type, version, actor, set_at FROM shadow_versions ORDER BY model_type",
    "versions_figures": """
        SELECT model_type, version, metrics, profile FROM model_versions
        WHERE model_type = :model_type AND version = ANY(CAST(:versions AS int[]))
    """,
    # the challenger's predictions of a window with the served predictions (the champion's) of the
    # same ids, and their outcome
    "shadow_pairs": """
        SELECT p.inputs, p.prediction AS served, s.prediction AS shadow, p.outcome
        FROM shadow_predictions AS s JOIN predictions AS p USING (prediction_id)
        WHERE s.model_type = :model_type AND s.version = :challenger AND p.version = :champion
          AND s.occurred_at > :since AND s.occurred_at <= :until
        ORDER BY s.occurred_at DESC
        LIMIT :limit
    """,
    "shadow_counts": """
        SELECT count(*) AS predictions, count(p.outcome) AS with_outcome
        FROM shadow_predictions AS s JOIN predictions AS p USING (prediction_id)
        WHERE s.model_type = :model_type AND s.version = :challenger AND p.version = :champion
          AND s.occurred_at > :since AND s.occurred_at <= :until
    """,
    "save_shadow_figures": """
        INSERT INTO shadow_figures AS f (model_type, "window", figures, computed_at)
        VALUES (:model_type, :window, CAST(:figures AS jsonb), now())
        ON CONFLICT (model_type, "window") DO UPDATE SET figures = EXCLUDED.figures, computed_at = EXCLUDED.computed_at
    """,
    "shadow_figures": """
        SELECT figures, computed_at FROM shadow_figures WHERE model_type = :model_type AND "window" = :window
    """,
    # -- the retention ---------------------------------------------------------------------------
    "forget_shadow_predictions": """
        DELETE FROM shadow_predictions WHERE prediction_id IN (
            SELECT prediction_id FROM shadow_predictions WHERE received_at < now() - make_interval(secs => :older)
            ORDER BY received_at LIMIT :limit)
    """,
    "forget_predictions": """
        DELETE FROM predictions WHERE prediction_id IN (
            SELECT prediction_id FROM predictions WHERE received_at < now() - make_interval(secs => :older)
            ORDER BY received_at LIMIT :limit)
    """,
    "forget_waiting": """
        DELETE FROM waiting_outcomes WHERE event_id IN (
            SELECT event_id FROM waiting_outcomes WHERE received_at < now() - make_interval(secs => :older)
            ORDER BY received_at LIMIT :limit)
    """,
    "forget_versions": """
        WITH gone AS (
            DELETE FROM live_versions WHERE last_prediction_at < now() - make_interval(secs => :older)
            RETURNING model_type, version
        )
        DELETE FROM live_figures AS f USING gone WHERE f.model_type = gone.model_type AND f.version = gone.version
    """,
}
