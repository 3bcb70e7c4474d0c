//! Diesel table definitions, kept by hand in step with `migrations/` (both backends share them).
#![allow(missing_docs)]

diesel::table! {
    users (id) {
        id -> Text,
        name -> Text,
        site_admin -> Bool,
        created_at -> BigInt,
        deleted_at -> Nullable<BigInt>,
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
    }
}

diesel::joinable!(memberships -> projects (project_id));
diesel::joinable!(memberships -> users (user_id));
diesel::joinable!(api_tokens -> users (user_id));
diesel::joinable!(agents -> projects (project_id));

diesel::allow_tables_to_appear_in_same_query!(users, projects, memberships, api_tokens, agents);
