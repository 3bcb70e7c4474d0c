//! Diesel table definitions, kept by hand in step with `migrations/` (both backends share them).

diesel::table! {
    users (id) {
        id -> Text,
        name -> Text,
        site_admin -> Bool,
        created_at -> BigInt,
        deleted_at -> Nullable<BigInt>,
        password_hash -> Nullable<Text>,
    }
}

diesel::table! {
    dashboard_sessions (id_hash) {
        id_hash -> Text,
        user_id -> Text,
        csrf_token -> Text,
        created_at -> BigInt,
        last_seen_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    projects (id) {
        id -> Text,
        slug -> Text,
        name -> Text,
        description -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        deleting_since -> Nullable<BigInt>,
    }
}

diesel::table! {
    memberships (project_id, user_id) {
        project_id -> Text,
        user_id -> Text,
        role -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Text,
        user_id -> Text,
        name -> Text,
        prefix -> Text,
        token_hash -> Text,
        created_at -> BigInt,
        expires_at -> Nullable<BigInt>,
        last_used_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    agents (id) {
        id -> Text,
        project_id -> Text,
        name -> Text,
        enrollment_token_hash -> Nullable<Text>,
        enrollment_expires_at -> Nullable<BigInt>,
        enrolled_at -> Nullable<BigInt>,
        preserve -> Bool,
        created_at -> BigInt,
        last_seen_at -> Nullable<BigInt>,
        public_key -> Nullable<Text>,
        credential_hash -> Nullable<Text>,
        session_generation -> BigInt,
        hostname -> Nullable<Text>,
        dropped_events -> BigInt,
        events_seq -> BigInt,
        rejected_events -> BigInt,
        last_rejection -> Nullable<Text>,
    }
}

diesel::joinable!(memberships -> projects (project_id));
diesel::joinable!(memberships -> users (user_id));
diesel::joinable!(api_tokens -> users (user_id));
diesel::joinable!(dashboard_sessions -> users (user_id));
diesel::joinable!(agents -> projects (project_id));

diesel::table! {
    installation (id) {
        id -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    audit_chains (id) {
        id -> Text,
        project_id -> Nullable<Text>,
        head_seq -> BigInt,
        head_hash -> Text,
        checkpointed_seq -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    audit_rows (chain_id, seq) {
        chain_id -> Text,
        seq -> BigInt,
        prev_hash -> Text,
        hash -> Text,
        key_id -> Text,
        signature -> Text,
        statement -> Text,
        kind -> Text,
        command_id -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    commands (id) {
        id -> Text,
        project_id -> Text,
        agent_id -> Text,
        kind -> Text,
        payload -> Text,
        issuer_type -> Text,
        issuer_id -> Text,
        issuer_name -> Text,
        idempotency_key -> Nullable<Text>,
        critical -> Bool,
        global_throttle -> Bool,
        bound_depth -> Nullable<BigInt>,
        issued_at -> BigInt,
        expires_at -> BigInt,
        audit_chain -> Text,
        audit_seq -> BigInt,
    }
}

diesel::table! {
    command_status (command_id) {
        command_id -> Text,
        project_id -> Text,
        status -> Text,
        detail -> Nullable<Text>,
        late -> Bool,
        expires_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    idempotency_keys (project_id, issuer_id, kind, key) {
        project_id -> Text,
        issuer_id -> Text,
        kind -> Text,
        key -> Text,
        request_hash -> Text,
        command_id -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    queue_depths (agent_id, queue) {
        agent_id -> Text,
        queue -> Text,
        depth -> BigInt,
        observed_at -> BigInt,
    }
}

diesel::table! {
    tasks (id) {
        id -> Text,
        project_id -> Text,
        agent_id -> Nullable<Text>,
        engine -> Text,
        task_id -> Text,
        name -> Nullable<Text>,
        queue -> Nullable<Text>,
        state -> Text,
        state_rank -> Integer,
        state_at -> BigInt,
        priority -> Nullable<Text>,
        args -> Nullable<Text>,
        kwargs -> Nullable<Text>,
        result -> Nullable<Text>,
        exception -> Nullable<Text>,
        traceback -> Nullable<Text>,
        retry_count -> Integer,
        eta -> Nullable<BigInt>,
        received_at -> Nullable<BigInt>,
        started_at -> Nullable<BigInt>,
        finished_at -> Nullable<BigInt>,
        runtime_ms -> Nullable<BigInt>,
        worker_name -> Nullable<Text>,
        parent_task_id -> Nullable<Text>,
        root_task_id -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        args_unavailable -> Nullable<Text>,
        truncated -> Nullable<Text>,
    }
}

diesel::table! {
    workers (agent_id, name) {
        project_id -> Text,
        agent_id -> Text,
        name -> Text,
        online -> Bool,
        state_at -> BigInt,
        last_heartbeat_at -> Nullable<BigInt>,
        pool -> Nullable<Text>,
        concurrency -> Nullable<Integer>,
        queues -> Nullable<Text>,
        updated_at -> BigInt,
    }
}

diesel::joinable!(audit_rows -> audit_chains (chain_id));
diesel::joinable!(command_status -> commands (command_id));
diesel::joinable!(queue_depths -> agents (agent_id));

diesel::table! {
    cleanup_tasks (id) {
        id -> Text,
        parent_id -> Nullable<Text>,
        project_id -> Text,
        source_event_id -> Nullable<Text>,
        resource_type -> Text,
        resource_id -> Text,
        metadata -> Text,
        status -> Text,
        attempts -> Integer,
        max_attempts -> Integer,
        last_error -> Nullable<Text>,
        next_attempt_at -> BigInt,
        lease_until -> Nullable<BigInt>,
        created_at -> BigInt,
        updated_at -> BigInt,
        completed_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    task_terms (project_id, field, value) {
        project_id -> Text,
        field -> Text,
        value -> Text,
    }
}

diesel::table! {
    schedules (id) {
        id -> Text,
        project_id -> Text,
        name -> Text,
        kind -> Text,
        enabled -> Bool,
        cron -> Text,
        timezone -> Text,
        config -> Text,
        next_run_at -> Nullable<BigInt>,
        last_run_at -> Nullable<BigInt>,
        last_status -> Nullable<Text>,
        created_by -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    schedule_runs (id) {
        id -> Text,
        schedule_id -> Text,
        due_at -> Nullable<BigInt>,
        trigger_kind -> Text,
        status -> Text,
        started_at -> BigInt,
        finished_at -> Nullable<BigInt>,
        result -> Text,
        command_ids -> Text,
        error -> Nullable<Text>,
    }
}

diesel::joinable!(schedule_runs -> schedules (schedule_id));

diesel::table! {
    task_retries (task_row_id) {
        task_row_id -> Text,
        command_id -> Text,
        retried_at -> BigInt,
    }
}

diesel::joinable!(task_retries -> tasks (task_row_id));

diesel::allow_tables_to_appear_in_same_query!(
    dashboard_sessions,
    schedules,
    schedule_runs,
    cleanup_tasks,
    task_terms,
    users,
    projects,
    memberships,
    api_tokens,
    agents,
    installation,
    audit_chains,
    audit_rows,
    commands,
    command_status,
    idempotency_keys,
    queue_depths,
    tasks,
    task_retries,
    workers,
);
