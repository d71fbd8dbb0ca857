/*
 * hasched--0.1.0--0.2.0.sql
 *		Upgrade from 0.1.0 (released) to 0.2.0.  A fresh CREATE EXTENSION
 *		hasched runs hasched--0.1.0.sql and then this script, so a fresh
 *		install and an upgraded one have the same schema (test/t tests it).
 *
 * Each change is a section of its own, under a header naming its topic.
 */

\echo Use "ALTER EXTENSION hasched UPDATE TO '0.2.0'" to load this file. \quit
