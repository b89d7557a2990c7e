//! The store's catalogue of templates: a record per template on disk (name, source,
//! layers, config, who made it), written when a template is made and made to match the
//! data directory at start.

use paddock_runtime::template::Template;

use crate::state::AppState;

/// Records template `t` in the store's catalogue (made by `by`, a key id).
pub async fn catalogue(state: &AppState, t: &Template, by: Option<&str>) {
    let rec = paddock_store::TemplateRecord {
        name: t.name.clone(),
        source: t.source.clone(),
        layers: t.layer_ids.clone(),
        config: serde_json::to_value(&t.config).unwrap_or_default(),
        created_at: if t.created_unix_ms > 0 {
            t.created_unix_ms as i64
        } else {
            paddock_store::now_ms()
        },
        created_by: by.map(str::to_owned),
    };
    if let Err(e) = state.store.upsert_template(&rec).await {
        tracing::error!(template = %t.name, "recording the template: {e}");
    }
}

/// Makes the store's catalogue match the templates on disk (at start): templates found on
/// disk are recorded, records whose template is gone are removed.
pub async fn reconcile(state: &AppState) -> Result<(), paddock_store::StoreError> {
    let on_disk: Vec<Template> = state
        .runtime
        .templates()
        .into_iter()
        .filter(|t| t.name != "base" && !t.name.starts_with("build-"))
        .collect();
    let recorded = state.store.list_templates().await?;
    // On a node the catalogue is the fleet's: templates of other nodes stay.
    for r in recorded.iter().filter(|_| state.cfg.node.is_none()) {
        if !on_disk.iter().any(|t| t.name == r.name) {
            tracing::warn!(template = %r.name, "template is gone from the data directory; removing its record");
            state.store.delete_template(&r.name).await?;
        }
    }
    for t in &on_disk {
        if !recorded
            .iter()
            .any(|r| r.name == t.name && r.layers == t.layer_ids)
        {
            let by = recorded
                .iter()
                .find(|r| r.name == t.name)
                .and_then(|r| r.created_by.clone());
            catalogue(state, t, by.as_deref()).await;
        }
    }
    Ok(())
}
