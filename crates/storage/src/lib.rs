//! auditsink-storage (being written)
