/*
 * workflow_definition.h — the compiled form of a workflow definition.
 *
 * A definition (jsonb) is validated and compiled once per workflow version
 * into a WorkflowDefinition: nodes with their jsonpaths and Mustache templates
 * already compiled, edges indexed by source node.  workflow_cache.c keeps the
 * compiled versions per backend; engine.c runs them.
 */
#ifndef NOTIFLOW_WORKFLOW_DEFINITION_H
#define NOTIFLOW_WORKFLOW_DEFINITION_H

#include "postgres.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/jsonpath.h"
#include "utils/timestamp.h"

#include "notiflow.h"
#include "template.h"

typedef enum NodeType
{
	NODE_TRIGGER,
	NODE_EMAIL,
	NODE_SMS,
	NODE_PUSH,
	NODE_CHAT,
	NODE_WEBHOOK,
	NODE_CONDITION,
	NODE_SWITCH,
	NODE_DELAY,
	NODE_TRANSFORM,
	NODE_WAIT,
	NODE_UNKNOWN				/* only while validating an invalid definition */
} NodeType;

#define NODE_IS_ACTION(t) ((t) >= NODE_EMAIL && (t) <= NODE_WEBHOOK)

/* One "set" entry of a transform node: target path := template or jsonpath. */
typedef struct TransformAssignment
{
	char	   *target;			/* as written, e.g. "vars.total" */
	List	   *target_path;	/* list of String nodes: "vars", "total" */
	JsonPath   *path;			/* a string starting with "$": a jsonpath */
	Template   *tmpl;			/* any other string: a template */
	Jsonb	   *literal;		/* any other JSON value: itself */
} TransformAssignment;

/* One templated field of an action node, e.g. subject or text. */
typedef struct ContentField
{
	const char *name;
	Template   *tmpl;
} ContentField;

typedef struct WorkflowNode
{
	char	   *id;
	NodeType	type;
	int			index;

	/* trigger */
	List	   *required;		/* payload field names (char *) */
	JsonPath   *recipient_path;

	/* condition / switch */
	JsonPath   *if_path;
	JsonPath   *value_path;

	/* delay */
	Interval   *delay_for;
	JsonPath   *delay_until;

	/* actions: rendered content fields, and for webhooks the URL */
	int			n_fields;
	ContentField *fields;
	Template   *to;				/* optional address override */
	List	   *object_fields;	/* push "data" / webhook "body": ContentField * */

	/* transform */
	List	   *assignments;	/* TransformAssignment * */

	/* wait: the events (names) to collect for one correlation key */
	List	   *wait_events;	/* char * */
	Template   *wait_key;
	Interval   *wait_timeout;	/* NULL: no timeout */
	List	   *wait_before;	/* char *: ids of the wait nodes it is reached from */

	/* outgoing edges (indexes into WorkflowDefinition.edges) */
	int			n_out;
	int		   *out;
} WorkflowNode;

typedef struct WorkflowEdge
{
	int			from;
	int			to;
	char	   *on;				/* NULL: always followed */
} WorkflowEdge;

typedef struct WorkflowDefinition
{
	MemoryContext mcxt;			/* owns everything below */
	char	   *workflow_key;
	int			version;
	char	   *name;
	int			n_nodes;
	WorkflowNode *nodes;
	int			n_edges;
	WorkflowEdge *edges;
	int			trigger_index;
	TemplatePartials *partials;
} WorkflowDefinition;

/* One problem found by validation. */
typedef struct DefinitionProblem
{
	char	   *path;
	char	   *message;
} DefinitionProblem;

/*
 * Validates definition and, when it has no problem, compiles it into a new
 * memory context under parent.  Returns NULL and sets *problems (a List of
 * DefinitionProblem *, allocated in the caller's context) otherwise.
 * stored: a version already stored (the cache loading it), where rules added
 * to guide authors (interval bounds, a url starting with {{name}}) clamp or
 * say nothing instead of refusing what was accepted before them.
 */
extern WorkflowDefinition *workflow_definition_compile(Jsonb *definition,
													   MemoryContext parent,
													   List **problems,
													   bool stored);

/* Frees a compiled definition. */
extern void workflow_definition_free(WorkflowDefinition *def);

/* Returns the node with the given id, or NULL. */
extern WorkflowNode *workflow_definition_node(WorkflowDefinition *def, const char *id);

/* Maps a node type to its name in definitions. */
extern const char *workflow_node_type_name(NodeType type);

/* Maps an action node type to its delivery channel. */
extern NotiflowChannel workflow_node_channel(NodeType type);

#endif							/* NOTIFLOW_WORKFLOW_DEFINITION_H */
