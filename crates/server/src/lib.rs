//! auditsink-server (being written)
