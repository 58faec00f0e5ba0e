"""Examples, their readers, tasks (built-in and custom) and English-target pairs."""
