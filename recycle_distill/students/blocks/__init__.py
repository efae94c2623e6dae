"""Small building blocks of the students: each file one block, batch-first tensors."""
