DROP TABLE agents;
DROP TABLE api_tokens;
DROP TABLE memberships;
DROP TABLE projects;
DROP TABLE users;
