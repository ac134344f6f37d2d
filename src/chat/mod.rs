//! Chat: rendering conversations with a model's own template, the same way at training and at
//! inference, and the assistant-only loss masks of supervised fine-tuning.

pub mod loss_mask;
pub mod template;
