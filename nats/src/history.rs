//! Workloads' coarse demand history in the key-value bucket `pas-history`
//! ([`pas_workloads::history`]): the forecaster writes it, the forecaster
//! and the trainer read it back.

use async_nats::jetstream::kv::Store;
use pas_schemas::subjects::Keys;
use pas_workloads::history::Block;

use crate::Error;
use crate::kv_writer::NATS_CALL;

/// What [`read`] found: the blocks stored under their own key, and how
/// many entries were refused (not a block, or a block under another's key).
#[derive(Debug, Default)]
pub struct Read {
    /// The stored blocks, oldest first.
    pub blocks: Vec<Block>,
    /// Entries that are not the block their key names.
    pub refused: usize,
}

/// Reads `blocks` of `namespace/workload`'s history. A block not stored is
/// simply missing; an entry that does not decode is refused and counted; a
/// read that fails or takes longer than [`NATS_CALL`] fails the whole read.
pub async fn read(
    kv: &Store,
    keys: &Keys,
    namespace: &str,
    workload: &str,
    blocks: &[i64],
) -> Result<Read, Error> {
    let mut out = Read::default();
    for &index in blocks {
        let name = keys.history(namespace, workload, index);
        let entry = tokio::time::timeout(NATS_CALL, kv.get(&name))
            .await
            .map_err(|e| Error::js(format!("read {name} from pas-history in time"), e))?
            .map_err(|e| Error::js(format!("read {name} from pas-history"), e))?;
        let Some(bytes) = entry else {
            continue;
        };
        match Block::decode(&bytes) {
            Ok(block) if block.index == index => out.blocks.push(block),
            Ok(block) => {
                tracing::warn!(
                    key = name,
                    stored = block.index,
                    "A history block under another block's key; ignored."
                );
                out.refused += 1;
            }
            Err(error) => {
                tracing::warn!(key = name, error, "An unreadable history block; ignored.");
                out.refused += 1;
            }
        }
    }
    Ok(out)
}
