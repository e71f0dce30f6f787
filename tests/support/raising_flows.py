"""A workflows module that cannot be imported: a definition the engine refuses."""

from __future__ import annotations

from waystation import create_workflow

broken = create_workflow(id="broken").parallel([]).commit()
