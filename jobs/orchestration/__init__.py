"""Airflow glue: ``task`` is what the DAG calls; ``local`` runs Airflow on a developer's machine."""
