"""Entry modules executed inside job and helper processes; they import only what those need."""
