// Mirrors migrations/sqlite and migrations/postgres (the same tables); the store's tests run every query against the migrated schema.

diesel::table! {
    meta (key) {
        key -> Text,
        value -> Text,
    }
}

diesel::table! {
    reservations (id) {
        id -> Text,
        owner -> Text,
        description -> Text,
        src_stp -> Text,
        src_vlan -> Integer,
        dst_stp -> Text,
        dst_vlan -> Integer,
        bw_mbps -> BigInt,
        start_ms -> BigInt,
        end_ms -> BigInt,
        ero_include -> Text,
        ero_exclude -> Text,
        path -> Text,
        version -> Integer,
        committed_version -> Nullable<Integer>,
        reservation_state -> Text,
        provision_state -> Text,
        lifecycle_state -> Text,
        data_plane_active -> Bool,
        auto_provision -> Bool,
        hold_expires_ms -> Nullable<BigInt>,
        next_deadline_ms -> Nullable<BigInt>,
        created_ms -> BigInt,
        updated_ms -> BigInt,
        bw_rev_mbps -> Nullable<BigInt>,
        series_id -> Nullable<Text>,
        occurrence -> Nullable<Integer>,
        missed -> Bool,
        row_version -> BigInt,
    }
}

diesel::table! {
    series (id) {
        id -> Text,
        owner -> Text,
        description -> Text,
        rule -> Text,
        duration_ms -> BigInt,
        same_path -> Bool,
        skipped -> Text,
        created_ms -> BigInt,
    }
}

diesel::table! {
    bookings (resource, start_ms, reservation_id) {
        resource -> Text,
        start_ms -> BigInt,
        reservation_id -> Text,
        end_ms -> BigInt,
        bw_fwd_mbps -> BigInt,
        bw_rev_mbps -> BigInt,
        vlan -> Nullable<Integer>,
    }
}

diesel::table! {
    events (seq) {
        seq -> BigInt,
        reservation_id -> Text,
        machine -> Text,
        from_state -> Text,
        to_state -> Text,
        effective_ms -> BigInt,
        recorded_ms -> BigInt,
        detail -> Text,
    }
}

diesel::table! {
    segments (reservation_id, idx) {
        reservation_id -> Text,
        idx -> Integer,
        domain -> Text,
        segment_id -> Text,
        series_id -> Nullable<Text>,
        ingress -> Text,
        ingress_vlan -> Integer,
        egress -> Text,
        egress_vlan -> Integer,
        reservation_state -> Text,
        provision_state -> Text,
        lifecycle_state -> Text,
        data_plane_active -> Bool,
        summary -> Text,
        updated_ms -> BigInt,
    }
}

diesel::table! {
    node_states (reservation_id, node) {
        reservation_id -> Text,
        node -> Text,
        state -> Text,
        error -> Text,
        updated_ms -> BigInt,
    }
}

diesel::table! {
    audit (seq) {
        seq -> BigInt,
        at_ms -> BigInt,
        who -> Text,
        action -> Text,
        target -> Text,
        result -> Text,
        detail -> Text,
    }
}

diesel::table! {
    measurements (seq) {
        seq -> BigInt,
        reservation_id -> Text,
        series_id -> Nullable<Text>,
        occurrence -> Nullable<Integer>,
        at_ms -> BigInt,
        kind -> Text,
        who -> Text,
        booked_mbps -> BigInt,
        duration_ms -> BigInt,
        probes_sent -> Integer,
        probes_received -> Integer,
        rtt_min_us -> BigInt,
        rtt_avg_us -> BigInt,
        rtt_max_us -> BigInt,
        forward_avg_us -> BigInt,
        backward_avg_us -> BigInt,
        jitter_us -> BigInt,
        throughput_mbps -> Double,
        ip_throughput_mbps -> Double,
        min_throughput_ratio -> Double,
        max_loss -> Double,
        max_rtt_ms -> Nullable<Double>,
        verdict -> Text,
        reasons -> Text,
    }
}

diesel::table! {
    verify_each (target) {
        target -> Text,
        duration_ms -> BigInt,
        probes -> Integer,
        min_throughput_ratio -> Double,
        max_loss -> Double,
        max_rtt_ms -> Nullable<Double>,
    }
}

diesel::joinable!(bookings -> reservations (reservation_id));
diesel::joinable!(segments -> reservations (reservation_id));
diesel::joinable!(node_states -> reservations (reservation_id));
diesel::allow_tables_to_appear_in_same_query!(
    meta,
    reservations,
    bookings,
    events,
    series,
    segments,
    node_states,
    audit,
    measurements,
    verify_each
);
