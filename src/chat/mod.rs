//! Chat: rendering conversations with a model's own template, the same way at training and at
//! inference.

pub mod template;
